"""Whisper as a stream: LocalAgreement over a growing buffer.

Per update, the audio of the current utterance from the buffer's start is decoded as one encoder
window (the buffer and at least 5 s of silence, in 1 s steps, where the package's encoder takes
windows shorter than Whisper's 30 s; 30 s otherwise), prompted with the text committed before the
buffer as the decoder said it (timestamps included, as offline transcription prompts a window), the
tokens committed in the buffer forced as the start of the transcript (so only the rest is
generated). The words that this hypothesis and the previous one agree on become a final (a
word is whole once the next one starts, or once the decoder closed its segment with a timestamp);
words agree when they are spelled the same, case and punctuation aside (an update that said nothing
after the committed text leaves the previous hypothesis to agree with). Inside an utterance the
text may not end before END_MARGIN_S short of the audio heard. With `commit_prob` under
1, words the decoder chose with at least that probability do not wait for the next hypothesis.
The rest is a partial. Once the buffer is longer than TRIM_SECONDS it is trimmed at the end of
the last committed segment, and past `max_segment_s` it is committed and cut. The voice-activity
detector ends utterances and keeps silence away from the decoder; a chunk without speech inside an
utterance is not decoded. When an utterance ends, the rest of the last hypothesis is final if that
hypothesis heard the whole utterance; otherwise the utterance is decoded once more, and all of that
is final. Either way, when that text stopped more than a second short of the utterance's end, the
audio after it is decoded on its own and is final too.

Updates ask for their encoder and decoder calls as `Work`, so a `StreamScheduler` can batch the
calls of many streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import _core
from ..options import TranscribeOptions
from ..families.whisper.graphs import WINDOW_PAD, join_windows, take_windows
from ..search import Decoded
from .agreement import WordStarts, agreement, before_loop, complete_words, confident_words, restated, spelled_through
from .events import SAMPLE_RATE, StreamEvent, StreamOptions
from .session import FRAMES_PER_SECOND, HOP, Update, VoiceSession, Work

TIME_STEP = 0.02            # seconds per timestamp token
CONTEXT_TOKENS = 120        # tokens of the text committed before the buffer (timestamps included)
                            # that prompt the decoder
DETECT_SECONDS = 3.0        # the language is detected again until an utterance has this much audio
SURE_LANGUAGE = 0.5         # a detection less sure than this on less than DETECT_SECONDS of audio,
                            # of a language other than the stream's last, decodes nothing yet:
                            # 0.64 s of English came out as Polish at 0.48
LEAD_IN_FRAMES = 50         # audio kept before speech starts (0.5 s)
TRIM_SECONDS = 10.0         # seconds: a longer buffer is trimmed at committed segment ends
MAX_NEW_TOKENS = 200        # generation cap per update; the same for every stream, so a result
                            # does not depend on its batch mates (a loop stops at its third repeat)
NO_SPEECH = (0.6, -1.0)     # no-speech probability above, average log-prob below: no text
MAX_COMPRESSION = 2.4       # a more repetitive hypothesis commits nothing
MAX_LETTERS = (25.0, 10)    # letters per second of audio, and letters, that a hypothesis can hold:
                            # more is made up (on 0.29 s left at an utterance's end the decoder
                            # said its prompt's last sentence again, 33 letters)
CONFIDENT_BEFORE_END_S = 0.5   # a word committed on confidence ended this long before the buffer's end
UNSAID_FRAMES = 100         # at an utterance's end, audio after the text's end longer than this
                            # is decoded on its own: the decoder closed its text at 5.2 s of a 9 s
                            # buffer and stopped, twice, and the last 4 s of speech ("telescopes,
                            # hot tea and a few folding chairs") were never committed
MAX_TAILS = 2               # such decodes per utterance end
END_MARGIN_S = 1.0          # inside an utterance, the text may not end before a timestamp this close
                            # to the end of the audio heard. (Where windows are short, to the least audio
                            # a window of that size holds, so that buffers encoded alike share a decode
                            # batch: the bound is 1-2 s before the end.) The decoder takes the sentence
                            # the buffer cuts off as unfinished and ends without it, as Whisper ends a
                            # 30 s window: a sentence of the meeting waited four updates (2.5 s) for it
WINDOW_STEP = 100           # mel frames: a window is the buffer and at least 5 s of padding, rounded
                            # up to 1 s. (Offline rounds to 5 s so that windows share batches. Streams
                            # on a LiveScheduler update one at a time, where 5 s steps encoded 15% more
                            # frames; streams stepped together by one StreamScheduler now share an
                            # encoder call only when their windows round alike.)


@dataclass
class Hypothesis:
    """One decode of the buffer: its text tokens, each with start and end (seconds from the
    buffer start) and the probability the decoder gave it, and where its closed segments (ended
    by a timestamp) end."""

    tokens: list[int] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    segment_ends: list[int] = field(default_factory=list)      # token counts
    segment_times: list[float] = field(default_factory=list)   # seconds


def parse_hypothesis(tokens: list[int], timestamp_begin: int, duration: float, weight,
                     probs: list[float] | None = None) -> Hypothesis:
    """Text tokens with times: each run of text between timestamp tokens spans its two stamps
    (a run the decoder did not close ends at `duration`), shared among its tokens by `weight`.
    `probs`: one per token of `tokens` (default 1.0)."""
    h = Hypothesis()
    h.probs = [p for t, p in zip(tokens, probs or [1.0] * len(tokens)) if t < timestamp_begin]
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
    # Silence that ends an utterance when the options do not say: a short pause between sentences
    # stays inside the utterance, so the next sentence is decoded with this one as context
    # (measured, BENCHMARKS.md 2026-11-27: lecture WER 14.18% at 800 ms, 10.70% at 1500 ms)
    default_endpoint_ms = 1500

    def __init__(self, model, options: StreamOptions):
        if options.language is not None and model.tokens.multilingual and options.language not in model.tokens.languages:
            raise ValueError(f"unknown language '{options.language}'")
        history = int((options.max_segment_s + 2 * options.chunk_ms / 1000 + 2) * SAMPLE_RATE)
        super().__init__(options, model.vad, _core.StreamBuffer(model.graphs.n_mels, 1, 1, history))
        self.model = model
        self._ts0 = model.tokens.timestamp_begin
        self.decode_options = TranscribeOptions(beam_size=options.beam_size, temperatures=(0.0,), vad_gate=None,
                                                max_new_tokens=MAX_NEW_TOKENS, stop_loops=True)
        text = options.context.strip()
        self.context: list[int] = model.tokenizer.encode(" " + text) if text else []
        self._given_context = len(self.context)   # the caller's context text, not speech
        # what prompts the decoder: the caller's context, then the committed text as the decoder
        # said it, timestamps and all, as offline transcription prompts each window with the
        # windows before it. (With the text alone the decoder stopped closing segments: one
        # segment ran on through a 20 s buffer, which was then never trimmed but cut.)
        self.prompt: list[int] = self.context[-CONTEXT_TOKENS:]
        self.fixed_language = options.language if model.tokens.multilingual else "en"
        self._mel_max = -np.inf
        self._start = 0                      # first mel frame of the buffer
        self._last_end = 0.0                 # end of the last final, seconds in the stream
        self._starts_word = WordStarts(model.tokenizer)
        self._spoken: str | None = None      # the language of the last update decoded
        self._new_utterance()

    def _new_utterance(self) -> None:
        self.committed: list[int] = []       # tokens committed since the buffer's start
        self.prefix: list[int] = []          # the decoder's tokens through the committed ones (with
                                             # timestamps): forced, so the next update only continues
        self.previous: list[int] = []        # the last hypothesis after the committed tokens
        self._previous_raw: list[int] = []   # and as the decoder said it, with timestamps
        self._previous_times: tuple[list[float], list[float]] = ([], [])   # its tokens' starts, ends (stream s)
        self._heard_through = -1             # the audio (end frame) the last hypothesis heard
        self._said_through = -1              # and where its text ended: its last closed segment's
                                             # end, or the end of what it heard when the text ran on
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
        self._cut(end_frame)
        self._new_utterance()

    def _cut(self, frame: int) -> None:
        """Start the buffer at `frame`: the text committed in it becomes context, nothing is forced."""
        if self.committed:
            ts0 = self._ts0
            if _text(self.prefix, ts0) == self.committed:
                said, after = self.prefix, self._previous_raw[:1]
            else:   # trimmed since it was decoded: its timestamps counted from the old start
                said, after = [ts0] + self.committed, []
            if said[-1] < ts0:
                # the segment closes where the decoder closed it, or else where the buffer is cut
                stamp = after[0] if after and after[0] >= ts0 else ts0 + min(1500, (frame - self._start) // 2)
                said = said + [max([stamp] + [t for t in said if t >= ts0])]
            self._prompt_with(said)
        self.context += self.committed
        self.committed, self.prefix = [], []
        self._start = max(self._start, frame)

    def _prompt_with(self, said: list[int]) -> None:
        self.prompt = (self.prompt + said)[-CONTEXT_TOKENS:]

    def _silence(self, now: int) -> None:
        """Nothing reaches the decoder; only a lead-in is kept for the next utterance."""
        self._start = max(self._start, now - LEAD_IN_FRAMES)
        self.buffer.drop_before(min(self._start, now))

    def _decode(self, end: int, commit_all: bool) -> Update:
        if commit_all and self._heard_through >= end:
            # the utterance ended, and the last hypothesis heard all of it: its rest is final as
            # it stands. (Decoding again, with more of it forced, once made the decoder say the
            # utterance's last sentence twice.)
            events = self._commit_previous()
        else:
            events = yield from self._decode_buffer(end, commit_all)
        for _ in range(MAX_TAILS if commit_all else 0):
            if not self._start < self._said_through < end - UNSAID_FRAMES:
                break
            # the text stopped short of the utterance's end (the decoder closed its last segment
            # and ended): the audio after it is decoded on its own, as offline transcription goes
            # on from a window's last timestamp
            self._cut(self._said_through)
            events += yield from self._decode_buffer(end, True)
        return events

    def _decode_buffer(self, end: int, commit_all: bool) -> Update:
        """Decode the buffer through frame `end`; commit on agreement, or all of it."""
        # an utterance a chunk past the limit with nothing trimmed (noise, a loop): commit and cut
        forced = not commit_all and \
            end - self._start >= self.options.max_segment_s * FRAMES_PER_SECOND + self.options.chunk_samples // HOP
        start = max(self._start, self.buffer.first_frame)
        frames = end - start
        if frames <= 0:
            return []
        raw = self.buffer.frames(start, end)
        model = self.model
        size = model.graphs.window_frames(frames, WINDOW_STEP)
        # the padding is silence: the log-mel floor, which Whisper's reference gives the zero
        # samples it pads audio with. (Zeros after normalising, as in faster-whisper's last window,
        # are a steady hum to the model; under them it misplaced its timestamps, and some finals
        # were stamped 5-8 s early: BENCHMARKS.md, tenth session.)
        floor = self._mel_max - 8.0
        mel = np.full((raw.shape[0], size), (floor + 4.0) / 4.0, dtype=np.float32)
        mel[:, :frames] = (np.maximum(raw, floor) + 4.0) / 4.0
        cross = yield Work((id(model), "encode", size), lambda items: encode_windows(model, items), mel)
        short = frames < DETECT_SECONDS * FRAMES_PER_SECOND
        language = self.fixed_language or (None if short else self.language)
        options = self.decode_options
        if not (commit_all or forced):
            heard = min(frames, size - WINDOW_PAD - WINDOW_STEP) / FRAMES_PER_SECOND
            options = replace(options, min_final_timestamp=max(0.0, round(heard - END_MARGIN_S, 2)))
        decoded, detected = yield Work(
            (id(model), "decode", options, size), lambda items: decode_windows(model, options, items),
            (cross, self.prompt, language, self.prefix,
             (short and not (commit_all or forced), self._spoken)))
        if decoded is None:
            return []   # the language is not clear yet: wait for more audio
        self.language = self._spoken = detected
        events = self._commit(decoded, start, frames, commit_all or forced)
        if forced:
            self._end(end)   # the utterance goes on in a fresh buffer
        return events

    def _commit(self, d: Decoded, start: int, frames: int, commit_all: bool) -> list[StreamEvent]:
        duration = frames / FRAMES_PER_SECOND
        silent = d.no_speech_prob > NO_SPEECH[0] and d.avg_logprob < NO_SPEECH[1]
        if d.too_repetitive(MAX_COMPRESSION) and not commit_all:
            return []   # a loop: wait for more audio
        raw = self.prefix + ([] if silent else d.best.tokens)
        generated = [] if silent else np.exp(d.best.token_logprobs[:len(d.best.tokens)]).tolist()
        probs = [1.0] * len(self.prefix) + generated
        h = parse_hypothesis(raw, self._ts0, duration, self._weight, probs)
        if len(self._starts_word.spelling(h.tokens)) > MAX_LETTERS[0] * duration + MAX_LETTERS[1]:
            return []   # more text than the audio can hold: nothing of it is committed
        if self.committed:
            done = self._skip_committed(h.tokens)
        else:
            # a fresh buffer whose text begins with the last words said before it: its start (a
            # segment end the decoder stamped) came too early, and those words were committed
            # already. They count as committed in this buffer, not as new words. (A buffer
            # trimmed at a stamp 4 s early had 12 committed words committed again.)
            spoken = self.context[self._given_context:][-CONTEXT_TOKENS:]
            done = restated(spoken, h.tokens, self._starts_word, self._starts_word.spelling)
        current = h.tokens[done:]
        if commit_all:
            take = len(current)
        else:
            spelling = self._starts_word.spelling
            take, agreed = agreement(self.previous, current, self._starts_word, spelling)
            if self.options.commit_prob < 1.0:
                # words the decoder is sure of commit on this hypothesis alone, once they ended a
                # little before the buffer's end
                take = confident_words(current, h.probs[done:], h.ends[done:], take, self._starts_word,
                                       self.options.commit_prob, duration - CONFIDENT_BEFORE_END_S)
            closed = [n - done for n in h.segment_ends if n > done]   # segment ends, in `current`
            # a segment the decoder closed (a timestamp after its text) ends a whole word: commit
            # through it once the previous hypothesis agrees on all of it
            take = max([take] + [n for n in closed if n <= agreed])
            if duration >= self.options.max_segment_s:   # too long: commit through the last closed segment
                take = max(take, closed[-1] if closed else complete_words(current, len(current), self._starts_word))
        # a loop's repeat is never committed (at the end of an utterance, what follows it is dropped
        # too)
        looped = self._before_loop(h.tokens[:done], current, take)
        if looped < take:
            take = looped
            if commit_all:
                current = current[:take]
        # the decoder said nothing after the committed text (it closed the segment and ended, as
        # it does now and then with speech still to come: every other update, for a sentence of
        # the meeting): no evidence against the last hypothesis, which stays what the next one
        # has to agree with
        silent_after = not commit_all and not current and bool(self.previous) and h.tokens[:done] == self.committed
        events = []
        offset = start / FRAMES_PER_SECOND
        if take:
            begin = max(self._last_end, offset + h.starts[done])
            end = max(begin, offset + h.ends[done + take - 1])
            self._last_end = end
            events.append(self._event("final", current[:take], begin, end))
        self.committed = h.tokens[:done + take]   # as the decoder spelled it this time
        self.prefix = _through_text_token(raw, len(self.committed), self._ts0)
        if not silent_after:
            self.previous = current[take:]
            self._previous_times = ([offset + t for t in h.starts[done + take:]], [offset + t for t in h.ends[done + take:]])
            self._heard_through = start + frames
            text_closed = bool(h.segment_ends) and h.segment_ends[-1] == len(h.tokens)
            self._said_through = start + (int(round(h.segment_times[-1] * FRAMES_PER_SECOND)) if text_closed else frames)
            self._previous_raw = raw[len(self.prefix):]
        if not commit_all:
            self._trim(h, raw, start, frames)
            rest = self.previous
            text = self.model.tokenizer.decode(rest)
            if self.options.partials and rest and text != self._partial and not silent_after:
                begin = max(self._last_end, offset + h.starts[len(h.tokens) - len(rest)])
                events.append(self._event("partial", rest, begin, max(begin, offset + h.ends[-1])))
            self._partial = text
        return events

    def _commit_previous(self) -> list[StreamEvent]:
        """Commit the last hypothesis's rest (up to a loop's repeat, as a final decode would)."""
        rest = self.previous
        take = self._before_loop(self.committed, rest, len(rest))
        events = []
        if take:
            starts, ends = self._previous_times
            begin = max(self._last_end, starts[0])
            self._last_end = max(begin, ends[take - 1])
            events.append(self._event("final", rest[:take], begin, self._last_end))
        self.committed = self.committed + rest[:take]
        said = _through_text_token(self._previous_raw, take, self._ts0)
        self.prefix, self._previous_raw = self.prefix + said, self._previous_raw[len(said):]
        self.previous = []
        return events

    def _before_loop(self, committed: list[int], tokens: list[int], n: int) -> int:
        """How many of tokens[:n] come before a loop's repeat (`agreement.before_loop`), the first
        copy looked for in the speech said before them: the context, as far back as a repeat of
        them can reach, and `committed` (the buffer's committed tokens)."""
        said = self.context[max(self._given_context, len(self.context) - len(tokens)):] + committed
        return before_loop(said, tokens, n, self._starts_word)

    def _skip_committed(self, tokens: list[int]) -> int:
        """How many leading tokens of a hypothesis the committed text covers: the committed tokens
        themselves, or, when the decoder spelled that text differently this time, as many
        tokens as it takes to say as many letters."""
        n = len(self.committed)
        if tokens[:n] == self.committed:
            return n
        spelling = self._starts_word.spelling
        return spelled_through(tokens, len(spelling(self.committed)), spelling)

    def _trim(self, h: Hypothesis, raw: list[int], start: int, frames: int) -> None:
        """Move the buffer's start past committed segments once it is long; cut it when too long."""
        if frames < TRIM_SECONDS * FRAMES_PER_SECOND:
            return
        done = [(n, t) for n, t in zip(h.segment_ends, h.segment_times) if n <= len(self.committed)]
        if done:
            n, t = done[-1]
            said = _through_text_token(raw, n, self._ts0)
            self._prompt_with(raw[:len(said) + 1])   # and the timestamp that closed the segment
            self.context += self.committed[:n]
            self.committed = self.committed[n:]
            self.prefix = []   # its timestamps counted from the old start; the hypothesis re-finds the rest
            self._start = max(self._start, start + int(round(t * FRAMES_PER_SECOND)))
        elif frames >= self.options.max_segment_s * FRAMES_PER_SECOND and self.committed:
            # no segment closed: cut after the last committed word
            self._cut(start + int(round(h.ends[len(self.committed) - 1] * FRAMES_PER_SECOND)))
        self.buffer.drop_before(self._start)

    def _event(self, kind: str, tokens: list[int], start: float, end: float) -> StreamEvent:
        return StreamEvent(kind, self.model.tokenizer.decode(tokens), round(start, 3), round(end, 3),
                           self.language, self.seconds_fed, tuple(tokens))

    def _weight(self, token: int) -> int:
        """A token's share of its run's time: the characters it spells."""
        return len(self._starts_word.piece(token).strip())


def _text(tokens: list[int], timestamp_begin: int) -> list[int]:
    return [t for t in tokens if t < timestamp_begin]


def _through_text_token(raw: list[int], n: int, timestamp_begin: int) -> list[int]:
    """The tokens of `raw` up to and including its n-th text token (timestamps pass through)."""
    if n == 0:
        return []
    seen = 0
    for i, t in enumerate(raw):
        if t < timestamp_begin:
            seen += 1
            if seen == n:
                return raw[:i + 1]
    return list(raw)


def encode_windows(model, mels: list[np.ndarray]) -> list[np.ndarray]:
    """Windows of several streams in one encoder call; each gets its cross keys [L, 2, 1, ...]."""
    cross = model.graphs.encode(np.stack(mels))
    return [cross[:, :, i:i + 1] for i in range(len(mels))]


def decode_windows(model, options: TranscribeOptions, items: list) -> list[tuple[Decoded | None, str]]:
    """(cross keys, context tokens, language or None, forced prefix, (may wait, expected language))
    of several streams, decoded as one batch; languages not given are detected first. Returns
    (decoded, language) per item; the decoded tokens follow the prefix. An item that may wait and
    whose language was detected with less than SURE_LANGUAGE, other than the one expected, is not
    decoded (None)."""
    cross = join_windows([item[0] for item in items])
    languages = [item[2] for item in items]
    go = list(range(len(items)))
    unknown = [i for i, lang in enumerate(languages) if lang is None]
    if unknown:
        probs = model.detect_language(take_windows(cross, unknown))
        for i, p in zip(unknown, probs):
            languages[i] = p[0][0]
            may_wait, expected = items[i][4]
            if may_wait and p[0][1] < SURE_LANGUAGE and p[0][0] != expected:
                go.remove(i)
    t = model.tokens
    prompts = []
    for i in go:
        _, context, _, prefix, _ = items[i]
        head = [t.sot_prev] + context if context else []
        prompts.append((head + t.sot_sequence(languages[i], "transcribe") + prefix, len(head)))
    out: list[Decoded | None] = [None] * len(items)
    if go:
        decoded = model.decode_prompts(take_windows(cross, go), prompts, options, [0] * len(go),
                                       [items[i][3] for i in go])
        for i, d in zip(go, decoded):
            out[i] = d
    return list(zip(out, languages))
