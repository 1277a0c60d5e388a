"""Qwen3-ASR as a stream: encoder windows computed once, the decoder's cache reused, the last
tokens kept provisional.

The encoder attends within windows of `window_chunks` chunks (8 s), so a window whose frames are
all in is final: its embeddings are kept and only the open window is encoded again at each
update. The decoder reads the prompt head, the audio embeddings of the segment, the prompt tail
and the committed text; positions before the first audio embedding that can still change keep
their keys and values from the previous update, and only the rest is run again. Text is
committed with the official toolkit's rollback policy (all but the last `rollback_tokens`,
nothing in the first `unfixed_chunks` updates of a segment); committed tokens are forced as the
prefix of the next answer, so they never change. A segment ends at an endpoint or after
`max_segment_s`; the next one starts with a fresh cache and the committed text as context.

`reuse=False` recomputes every window and the whole prompt at each update: it must give the
same tokens (the check that the reuse is right), at the cost the official toolkit pays.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ..kvcache import CachedDecoderState, KVCache
from ..search import SearchOptions, search
from ..vad import SpeechDetector
from ..families.qwen3_asr.prompt import language_name, parse_output
from .agreement import WordStarts, common_prefix, rollback
from .events import SAMPLE_RATE, StreamEvent, StreamOptions
from .session import FRAMES_PER_SECOND, Update, VoiceSession, Work

CONTEXT_CHARS = 200          # committed text carried into the next segment's context
NEW_TOKENS_PER_SECOND = 6    # generation cap when the answer starts afresh
NEW_TOKENS_PER_UPDATE = 24   # ...and beyond the rolled-back tokens otherwise


class Qwen3ASRStream(VoiceSession):
    def __init__(self, model, options: StreamOptions):
        g = model.graphs
        c = g.chunking
        history = int((options.max_segment_s + 2 * options.chunk_ms / 1000) * SAMPLE_RATE) \
            + 2 * c.chunk_frames * c.window_chunks * 160
        super().__init__(options, SpeechDetector.from_package(model.package, model.profile),
                         _core.StreamBuffer(g.n_mels, c.chunk_frames, c.window_chunks, history))
        self.model = model
        self.language = language_name(options.language)
        self.asr_text = model.tokenizer.token_to_id("<asr_text>")
        self.fixed_new_tokens: int | None = None   # benchmarks: exactly this many tokens per update
        self._windows: dict[int, np.ndarray] = {}   # final windows' embeddings [tokens, hidden]
        self._window_max: dict[int, float] = {}     # raw log-mel maximum of each window's frames
        self._committed_text = options.context.strip()
        self._last_end = 0.0
        self._starts_word = WordStarts(model.tokenizer, () if self.asr_text is None else (self.asr_text,))
        self._segment(0)

    def _segment(self, first_frame: int) -> None:
        """Start a segment at `first_frame` (its audio embeddings start with the one that covers
        that frame)."""
        self._first = first_frame
        self.fixed: list[int] = []          # committed answer tokens (forced as the next prefix)
        self.seen: list[float] = []         # per answer token: audio time it first appeared
        self.answer: list[int] = []         # the last answer
        self.updates_in_segment = 0
        self._context = self._committed_text       # the segment's prompt context: fixed, the cache depends on it
        self._answer_language: str | None = None
        self._state: CachedDecoderState | None = None
        self._reusable = 0                  # prompt positions whose cache is still right
        self.reused_positions = 0
        self._partial = ""

    # -- audio ---------------------------------------------------------------------------------

    def _frames_arrived(self, n: int) -> None:
        ready, wf = self.buffer.frames_ready, self.buffer.window_frames
        start = ready - n
        while start < ready:
            w = start // wf
            stop = min(ready, (w + 1) * wf)
            peak = float(self.buffer.frames(start, stop).max())
            self._window_max[w] = max(self._window_max.get(w, -np.inf), peak)
            start = stop

    def _norm_max(self, w: int) -> float:
        """Normalisation reference of window w: the loudest frame from the stream's start through
        the window (fixed once the window is final, whenever it is computed)."""
        known = [m for i, m in self._window_max.items() if i <= w]
        return max(known) if known else 0.0

    def _begin(self, first_frame: int) -> None:
        self._segment(first_frame)

    def _end(self, end_frame: int) -> None:
        self._segment(end_frame)

    def _silence(self, now: int) -> None:
        """Nothing reaches the decoder. Frames are kept from the start of the window that holds
        the last 2 s: an utterance found at the next update may begin there, and its first
        window is encoded whole."""
        wf = self.buffer.window_frames
        self._first = now
        self._drop(max(0, now - 2 * FRAMES_PER_SECOND) // wf * wf)

    def _drop(self, frame: int) -> None:
        """Forget audio and windows before `frame` (and before the segment's first window)."""
        wf = self.buffer.window_frames
        first_window = min(frame, self._first) // wf
        for w in [w for w in self._windows if w < first_window]:
            del self._windows[w]
        # window maxima fold into one entry: the normalisation reference only needs the maximum
        old = [w for w in self._window_max if w < first_window]
        if old:
            folded = max(self._window_max.pop(w) for w in old)
            self._window_max[first_window - 1] = folded
        self.buffer.drop_before(min(first_window * wf, self.buffer.frames_ready))

    # -- updates -------------------------------------------------------------------------------

    def _decode(self, end: int, final: bool) -> Update:
        b = self.buffer
        wf = b.window_frames
        first = self._first
        if end <= first:
            return []
        w0, w1 = first // wf, (end - 1) // wf
        final_windows = b.final_windows
        todo = []
        for w in range(w0, w1 + 1):
            if self.options.reuse and w in self._windows:
                continue
            stop = min((w + 1) * wf, b.frames_ready)
            todo.append((w, w * wf, stop))
        mels = [(np.maximum(b.frames(s, e), self._norm_max(w) - 8.0) + 4.0) / 4.0 for w, s, e in todo]
        model = self.model
        encoded = yield Work((id(model), "encode"), lambda items: encode_windows(model, items), mels)
        fresh = {}
        for (w, s, e), emb in zip(todo, encoded):
            fresh[w] = emb
            if w < final_windows:
                self._windows[w] = emb
        chunking = model.graphs.chunking
        audio, lengths = [], {}
        for w in range(w0, w1 + 1):   # the segment's part of each window
            lo, hi = max(first, w * wf) - w * wf, min(end, (w + 1) * wf) - w * wf
            audio.append(fresh.get(w, self._windows.get(w))[chunking.output_length(lo):chunking.output_length(hi)])
            lengths[w] = len(audio[-1])
        # audio positions (from the first) whose cache entries are right: now, those of the windows
        # kept from before this update; at the next update, those of every final window
        stable = (sum(n for w, n in lengths.items() if w < final_windows and w not in fresh),
                  sum(n for w, n in lengths.items() if w < final_windows))
        audio = np.concatenate(audio)
        events = self._answer(audio, stable, end, final)
        if end - first >= self.options.max_segment_s * FRAMES_PER_SECOND and not final:
            events += self._answer(audio, stable, end, True, again=False)
            self._segment(end)
        if self.options.reuse:
            self._drop(min(b.open_window[0], end))
        return events

    def _answer(self, audio: np.ndarray, stable: tuple[int, int], end: int, final: bool,
                again: bool = True) -> list[StreamEvent]:
        """Decode the segment's answer after the committed prefix (unless `again` is False:
        commit the last answer); commit and report."""
        m = self.model
        t = end / FRAMES_PER_SECOND
        if again:
            answer = self._generate(audio, stable, end, final)
            same = common_prefix(self.answer, answer)      # tokens unchanged keep their first time
            self.seen = self.seen[:same] + [t] * (len(answer) - same)
            self.answer = answer
            self.updates_in_segment += 1
        answer = self.answer
        if final:
            keep = len(answer)
        elif self.updates_in_segment <= self.options.unfixed_chunks:
            keep = 0
        else:
            keep = max(len(self.fixed), rollback(answer, self.options.rollback_tokens, self._starts_word))
        head = self._text_start(answer)
        events = []
        done = max(len(self.fixed), head)
        if keep > done:
            begin = max(self._last_end, self._first / FRAMES_PER_SECOND)
            stop = max(begin, min(t, self.seen[keep - 1]))
            self._last_end = stop
            events.append(self._event("final", answer[done:keep], begin, stop))
            self._committed_text = (self._committed_text + m.tokenizer.decode(answer[done:keep]))[-CONTEXT_CHARS:]
        self.fixed = answer[:max(keep, len(self.fixed))]
        rest = answer[max(keep, head):]
        text = m.tokenizer.decode(rest)
        if not final and self.options.partials and rest and text != self._partial:
            events.append(self._event("partial", rest, self._last_end, t))
        self._partial = text
        return events

    def _generate(self, audio: np.ndarray, stable: tuple[int, int], end: int, final: bool) -> list[int]:
        """The answer after the committed prefix; `stable`: audio positions (from the start) whose
        cache entries are right now, and those that will be at the next update."""
        m = self.model
        g = m.graphs
        prompt = m.prompt_ids(len(audio), self._context, self.language)
        ids = np.asarray(prompt + self.fixed, dtype=np.int64)
        embeds = g.embed(ids)
        slots = np.flatnonzero(ids == m.audio_pad)
        embeds[slots] = audio
        seconds = (end - self._first) / FRAMES_PER_SECOND
        if self.fixed_new_tokens is not None:
            max_new = min_new = self.fixed_new_tokens
        else:
            min_new = 0
            max_new = NEW_TOKENS_PER_UPDATE + self.options.rollback_tokens
            if final or not self.fixed:
                max_new = max(max_new, int(NEW_TOKENS_PER_SECOND * seconds) + 16)
        now_right, next_right = stable
        reuse = int(slots[0]) + now_right if self.options.reuse and self._state is not None and len(slots) else 0
        reuse = min(reuse, self._reusable, len(ids) - 1)
        if reuse <= 0 or self._state is None:
            cache = KVCache(g.n_layers, g.n_kv_heads, g.head_dim, 1, len(ids) + max_new + 1)
            self._state = CachedDecoderState(g.decoder, cache, g._token_feeds)
            reuse = 0
        state = self._state
        state.cache.lengths[:] = reuse
        self.reused_positions = reuse   # for tests and benchmarks: prompt positions not run again
        logits = state.run(ids[None, reuse:], np.array([[len(ids) - reuse - 1]]),
                           feeds={"inputs_embeds": embeds[None, reuse:]})[:, 0]
        self._reusable = int(slots[0]) + next_right if len(slots) else 0
        hyp = search(state, logits, SearchOptions(max_new_tokens=max_new, min_new_tokens=min_new, eos=m.eos))[0][0]
        return self.fixed + list(hyp.tokens)

    def _text_start(self, answer: list[int]) -> int:
        """Index of the first text token of an answer, after `language X<asr_text>` (which the
        prompt holds already when the language is given); len(answer) while it is incomplete."""
        if self.language is not None:
            return 0
        if self.asr_text is None or self.asr_text not in answer:
            return len(answer)
        at = answer.index(self.asr_text)
        self._answer_language, _ = parse_output(self.model.tokenizer.decode(answer[:at + 1]), None)
        return at + 1

    def _event(self, kind: str, tokens: list[int], start: float, end: float) -> StreamEvent:
        language = self.language or self._answer_language
        return StreamEvent(kind, self.model.tokenizer.decode(tokens), round(start, 3), round(end, 3),
                           language, self.seconds_fed, tuple(tokens))


def encode_windows(model, items: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The windows (normalised mel [n_mels, frames] each) of several streams in shared encoder
    calls; returns each window's embeddings [tokens, hidden], per item."""
    chunking = model.graphs.chunking
    flat = [mel for mels in items for mel in mels]
    windows = [w for i, mel in enumerate(flat) for w in chunking.windows(i, mel)]
    out = model.graphs.encode(windows, len(flat)) if flat else []
    result, k = [], 0
    for mels in items:
        result.append(out[k:k + len(mels)])
        k += len(mels)
    return result
