"""Whisper as a stream: LocalAgreement over a growing buffer.

Per update, the audio of the current utterance from the buffer's start is decoded as one 30 s
window, prompted with the text committed before the buffer. The words that this hypothesis and
the previous one agree on become a final; the rest is a partial. Once the buffer is longer than
`max_segment_s / 2` it is trimmed at the end of the last committed segment, and at
`max_segment_s` it is committed and cut. The voice-activity detector ends utterances (what is
decoded then is final) and keeps silence away from the decoder.

Updates ask for their encoder and decoder calls as `Work`, so a `StreamScheduler` can batch the
calls of many streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import _core
from ..options import TranscribeOptions
from ..search import Decoded
from .agreement import complete_words, local_agreement
from .events import SAMPLE_RATE, StreamEvent, StreamOptions
from .session import Update, VoiceSession, Work

HOP = 160                   # samples per mel frame
FRAMES_PER_SECOND = 100
WINDOW_FRAMES = 3000        # Whisper's 30 s input
TIME_STEP = 0.02            # seconds per timestamp token
CONTEXT_TOKENS = 120        # committed tokens before the buffer that prompt the decoder
DETECT_SECONDS = 3.0        # the language is detected again until an utterance has this much audio
LEAD_IN_FRAMES = 50         # audio kept before speech starts (0.5 s)
TOKENS_PER_SECOND = 8       # generation cap per update: a loop stops early
NO_SPEECH = (0.6, -1.0)     # no-speech probability above, average log-prob below: no text
MAX_COMPRESSION = 2.4       # a more repetitive hypothesis commits nothing


@dataclass
class Hypothesis:
    """One decode of the buffer: its text tokens, each with start and end (seconds from the
    buffer start), and where its closed segments (ended by a timestamp) end."""

    tokens: list[int] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    segment_ends: list[int] = field(default_factory=list)      # token counts
    segment_times: list[float] = field(default_factory=list)   # seconds


def parse_hypothesis(tokens: list[int], timestamp_begin: int, duration: float, weight) -> Hypothesis:
    """Text tokens with times: each run of text between timestamp tokens spans its two stamps
    (a run the decoder did not close ends at `duration`), shared among its tokens by `weight`."""
    h = Hypothesis()
    run: list[int] = []
    run_start = 0.0

    def close(end: float, closed: bool) -> None:
        w = np.cumsum([max(1, weight(t)) for t in run], dtype=np.float64)
        span = max(0.0, end - run_start)
        edges = [run_start] + [run_start + span * x / w[-1] for x in w]
        h.tokens += run
        h.starts += edges[:-1]
        h.ends += edges[1:]
        if closed:
            h.segment_ends.append(len(h.tokens))
            h.segment_times.append(end)

    for t in tokens:
        if t >= timestamp_begin:
            stamp = min((t - timestamp_begin) * TIME_STEP, duration)
            if run:
                close(max(stamp, run_start), True)
                run = []
            run_start = max(stamp, run_start) if h.tokens else stamp
        else:
            run.append(t)
    if run:
        close(max(duration, run_start), False)
    return h


class WhisperStream(VoiceSession):
    def __init__(self, model, options: StreamOptions):
        if options.language is not None and model.tokens.multilingual and options.language not in model.tokens.languages:
            raise ValueError(f"unknown language '{options.language}'")
        history = int((options.max_segment_s + 2 * options.chunk_ms / 1000 + 2) * SAMPLE_RATE)
        super().__init__(options, model.vad, _core.StreamBuffer(model.graphs.n_mels, 1, 1, history))
        self.model = model
        self.decode_options = TranscribeOptions(beam_size=options.beam_size, temperatures=(0.0,), vad_gate=None)
        text = options.context.strip()
        self.context: list[int] = model.tokenizer.encode(" " + text) if text else []
        self.fixed_language = options.language if model.tokens.multilingual else "en"
        self._mel_max = -np.inf
        self._start = 0                      # first mel frame of the buffer
        self._last_end = 0.0                 # end of the last final, seconds in the stream
        self._words: dict[int, bool] = {}
        self._new_utterance()

    def _new_utterance(self) -> None:
        self.committed: list[int] = []       # tokens committed since the buffer's start
        self.previous: list[int] = []        # the last hypothesis after the committed tokens
        self.language = self.fixed_language
        self._partial = ""

    def _frames_arrived(self, n: int) -> None:
        if n:
            ready = self.buffer.frames_ready
            self._mel_max = max(self._mel_max, float(self.buffer.frames(ready - n, ready).max()))

    def _begin(self, first_frame: int) -> None:
        self._start = max(self._start, first_frame)
        self._new_utterance()

    def _end(self, end_frame: int) -> None:
        self.context += self.committed
        self._start = max(self._start, end_frame)
        self._new_utterance()

    def _silence(self, now: int) -> None:
        """Nothing reaches the decoder; only a lead-in is kept for the next utterance."""
        self._start = max(self._start, now - LEAD_IN_FRAMES)
        self.buffer.drop_before(min(self._start, now))

    def _decode(self, end: int, commit_all: bool) -> Update:
        start = max(self._start, end - WINDOW_FRAMES)
        frames = end - start
        if frames <= 0:
            return []
        raw = self.buffer.frames(start, end)
        mel = np.zeros((raw.shape[0], WINDOW_FRAMES), dtype=np.float32)
        mel[:, :frames] = (np.maximum(raw, self._mel_max - 8.0) + 4.0) / 4.0
        model = self.model
        cross = yield Work((id(model), "encode"), lambda items: encode_windows(model, items), mel)
        language = self.fixed_language or (self.language if frames >= DETECT_SECONDS * FRAMES_PER_SECOND else None)
        max_new = int(TOKENS_PER_SECOND * frames / FRAMES_PER_SECOND) + 10
        options = self.decode_options
        decoded, self.language = yield Work(
            (id(model), "decode", options), lambda items: decode_windows(model, options, items),
            (cross, self.context[-CONTEXT_TOKENS:], language, max_new))
        return self._commit(decoded, start, frames, commit_all)

    def _commit(self, d: Decoded, start: int, frames: int, commit_all: bool) -> list[StreamEvent]:
        duration = frames / FRAMES_PER_SECOND
        silent = d.no_speech_prob > NO_SPEECH[0] and d.avg_logprob < NO_SPEECH[1]
        tokens = [] if silent else d.best.tokens
        h = parse_hypothesis(tokens, self.model.tokens.timestamp_begin, duration, self._weight)
        if d.compression_ratio > MAX_COMPRESSION and not commit_all:
            h = Hypothesis()   # a loop: wait for more audio
        done = self._skip_committed(h.tokens)
        current = h.tokens[done:]
        if commit_all:
            take = len(current)
        else:
            take = local_agreement(self.previous, current, self._starts_word)
            if duration >= self.options.max_segment_s:   # too long: commit through the last closed segment
                closed = [n - done for n in h.segment_ends if n > done]
                take = max(take, closed[-1] if closed else complete_words(current, len(current), self._starts_word))
        events = []
        offset = start / FRAMES_PER_SECOND
        if take:
            begin = max(self._last_end, offset + h.starts[done])
            end = max(begin, offset + h.ends[done + take - 1])
            self._last_end = end
            events.append(self._event("final", current[:take], begin, end))
        self.committed = h.tokens[:done + take]   # as the decoder spelled it this time
        self.previous = current[take:]
        if not commit_all:
            self._trim(h, start, frames)
            rest = self.previous
            text = self.model.tokenizer.decode(rest)
            if self.options.partials and rest and text != self._partial:
                begin = max(self._last_end, offset + h.starts[len(h.tokens) - len(rest)])
                events.append(self._event("partial", rest, begin, max(begin, offset + h.ends[-1])))
            self._partial = text
        return events

    def _skip_committed(self, tokens: list[int]) -> int:
        """How many leading tokens of a hypothesis the committed text covers: the committed tokens
        themselves, or, when the decoder spelled that text differently this time, as many
        tokens as it takes to say as many letters."""
        n = len(self.committed)
        if tokens[:n] == self.committed:
            return n
        want = len(_letters(self.model.tokenizer.decode(self.committed)))
        for j in range(len(tokens) + 1):
            if len(_letters(self.model.tokenizer.decode(tokens[:j]))) >= want:
                return j
        return len(tokens)

    def _trim(self, h: Hypothesis, start: int, frames: int) -> None:
        """Move the buffer's start past committed segments once it is long; cut it when too long."""
        if frames < self.options.max_segment_s * FRAMES_PER_SECOND / 2:
            return
        done = [(n, t) for n, t in zip(h.segment_ends, h.segment_times) if n <= len(self.committed)]
        if done:
            n, t = done[-1]
            self.context += self.committed[:n]
            self.committed = self.committed[n:]
            self._start = max(self._start, start + int(round(t * FRAMES_PER_SECOND)))
        elif frames >= self.options.max_segment_s * FRAMES_PER_SECOND and self.committed:
            # no segment closed: cut after the last committed word
            self._start = max(self._start, start + int(round(h.ends[len(self.committed) - 1] * FRAMES_PER_SECOND)))
            self.context += self.committed
            self.committed = []
        self.buffer.drop_before(self._start)

    def _event(self, kind: str, tokens: list[int], start: float, end: float) -> StreamEvent:
        return StreamEvent(kind, self.model.tokenizer.decode(tokens), round(start, 3), round(end, 3),
                           self.language, self.seconds_fed, tuple(tokens))

    def _weight(self, token: int) -> int:
        return len(self.model.tokenizer.decode([token]).strip())

    def _starts_word(self, token: int) -> bool:
        """A token that begins a word: a leading space, or a character of a script written without
        spaces (every such character is a word)."""
        known = self._words.get(token)
        if known is None:
            text = self.model.tokenizer.decode([token])
            first = text[:1]
            known = first == " " or (bool(first) and not first.isascii() and first.isalpha())
            self._words[token] = known
        return known


def _letters(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def encode_windows(model, mels: list[np.ndarray]) -> list[np.ndarray]:
    """Windows of several streams in one encoder call; each gets its cross keys [L, 2, 1, ...]."""
    cross = model.graphs.encode(np.stack(mels), model.profile.memory_budget_mb << 20)
    return [cross[:, :, i:i + 1] for i in range(len(mels))]


def decode_windows(model, options: TranscribeOptions, items: list) -> list[tuple[Decoded, str]]:
    """(cross keys, context tokens, language or None, most new tokens) of several streams,
    decoded as one batch; languages not given are detected first. Returns (decoded, language)
    per item."""
    cross = items[0][0] if len(items) == 1 else np.concatenate([item[0] for item in items], axis=2)
    languages = [item[2] for item in items]
    unknown = [i for i, lang in enumerate(languages) if lang is None]
    if unknown:
        probs = model.detect_language(cross if len(unknown) == len(items) else np.take(cross, unknown, axis=2))
        for i, p in zip(unknown, probs):
            languages[i] = p[0][0]
    t = model.tokens
    prompts = []
    for (_, context, _, _), lang in zip(items, languages):
        head = [t.sot_prev] + context if context else []
        prompts.append((head + t.sot_sequence(lang, "transcribe"), len(head)))
    max_new = max(item[3] for item in items)
    decoded = model.decode_prompts(cross, prompts, replace(options, max_new_tokens=max_new), [0] * len(items))
    return list(zip(decoded, languages))
