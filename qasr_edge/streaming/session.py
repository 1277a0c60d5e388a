"""The stream session: all per-stream state, fed PCM of any size, decoding at fixed audio times.

A session turns fed audio into updates at every `chunk_ms` of stream time (and one at `finish`),
whatever the sizes of the pieces it was fed, so the same audio always gives the same events.

An update is written as a generator that yields `Work` (an encoder or decoder call it needs) and
receives its result. Alone, a session runs each piece of work at once (`drive`); a
`StreamScheduler` instead advances many sessions together and runs the work of the same kind from
all of them as one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Hashable

import numpy as np

from .events import SAMPLE_RATE, StreamEvent, StreamOptions


@dataclass
class Work:
    """A call an update needs. Work items with equal `key` can run together: `run(items)` returns
    one result per item, in order."""

    key: Hashable
    run: Callable[[list[Any]], list[Any]]
    item: Any


Update = Generator[Work, Any, list[StreamEvent]]


def drive(update: Update) -> list[StreamEvent]:
    """Run one update, doing each piece of work as it is asked for."""
    try:
        work = next(update)
        while True:
            work = update.send(work.run([work.item])[0])
    except StopIteration as stop:
        return stop.value or []


def as_pcm(pcm: Any) -> np.ndarray:
    """16 kHz mono samples as float32: float arrays as they are, int16 scaled to [-1, 1)."""
    x = np.asarray(pcm)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype.kind != "f":
        raise TypeError(f"expected float or int16 samples, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("samples contain NaN or infinity")
    return x


class StreamSession:
    """Base of the families' sessions. Subclasses implement `_accept(pcm)` (take new samples)
    and `_update(final)` (a generator: decode what the audio so far allows, return events)."""

    def __init__(self, options: StreamOptions):
        self.options = options
        self.samples_fed = 0           # samples accepted so far
        self.finished = False
        self._next_update = options.chunk_samples

    @property
    def seconds_fed(self) -> float:
        return self.samples_fed / SAMPLE_RATE

    def feed(self, pcm: Any) -> list[StreamEvent]:
        """Accept any number of 16 kHz samples; return the events that became ready. A bad chunk
        raises (ValueError/TypeError) and leaves the session as it was."""
        return [e for u in self.updates(pcm) for e in drive(u)]

    def finish(self) -> list[StreamEvent]:
        """End of audio: decode what is left and commit it. The session takes no more audio."""
        return [e for u in self.finish_updates() for e in drive(u)]

    # -- for the scheduler --------------------------------------------------------------------

    def updates(self, pcm: Any, coalesce: bool = False):
        """Accept samples; yield the updates that the audio fed makes due, in order (drive each
        before taking the next). With `coalesce`, only the last of them runs: a stream that
        fell behind catches up in one update (at a chunk boundary still) instead of one per chunk."""
        if self.finished:
            raise RuntimeError("the stream is finished; open a new one")
        x = as_pcm(pcm)
        chunk = self.options.chunk_samples
        pos = 0
        while pos < len(x):
            due = self._next_update
            if coalesce:   # the last boundary this piece reaches, if it reaches one
                due += max(0, (self.samples_fed + len(x) - pos - due) // chunk) * chunk
            take = min(len(x) - pos, due - self.samples_fed)
            self._accept(x[pos:pos + take])
            self.samples_fed += take
            pos += take
            if self.samples_fed == due:
                self._next_update = due + chunk
                yield self._update(final=False)

    def finish_updates(self):
        if self.finished:
            return
        self.finished = True
        yield self._update(final=True)

    # -- subclasses ---------------------------------------------------------------------------

    def _accept(self, pcm: np.ndarray) -> None:
        raise NotImplementedError

    def _update(self, final: bool) -> Update:
        raise NotImplementedError


HOP = 160                 # samples per mel frame
FRAMES_PER_SECOND = 100   # mel frames per second


class VoiceSession(StreamSession):
    """A session that decodes utterances: the package's voice-activity detector ends them (after
    `endpoint_ms` of silence) and keeps silence away from the decoder.

    Subclasses own a `buffer` (`_core.StreamBuffer`) and implement `_decode(end_frame, final)`
    (an update over the open utterance's audio up to `end_frame`; `final`: commit everything),
    `_begin(first_frame)`, `_end(end_frame)` and `_silence(now_frame)`."""

    default_endpoint_ms = 800   # when the options give none

    def __init__(self, options: StreamOptions, detector, buffer):
        super().__init__(options)
        if detector is None:
            raise ValueError("streaming needs a package with a voice-activity detector (vad.onnx)")
        from ..vad import VadStream
        from .endpoint import Endpointer

        self.buffer = buffer
        self.vad = VadStream(detector)
        endpoint_ms = self.default_endpoint_ms if options.endpoint_ms is None else options.endpoint_ms
        self.endpointer = Endpointer(detector.frame, options.vad_threshold, endpoint_ms)
        self._ended: list = []     # utterances the endpointer closed since the last update
        self._open = None          # the utterance being decoded
        self._heard = False        # speech in the audio since the last update

    def _accept(self, pcm: np.ndarray) -> None:
        self._frames_arrived(self.buffer.accept(pcm))
        probs = self.vad.accept(pcm)
        self._heard = self._heard or bool(np.any(probs >= self.options.vad_threshold))
        self._ended += self.endpointer.push(probs)

    def _frames_arrived(self, n: int) -> None:
        """Hook: `n` new mel frames are in the buffer."""

    def _update(self, final: bool) -> Update:
        if final:
            self._frames_arrived(self.buffer.finish())
            if self.endpointer.current is not None:
                self.endpointer.current.end = self.samples_fed
                self._ended.append(self.endpointer.current)
                self.endpointer.current = None
        events: list[StreamEvent] = []
        ended, self._ended = self._ended, []
        for utterance in ended:
            end = min(-(-utterance.end // HOP), self.buffer.frames_ready)
            self._enter(utterance)
            events += yield from self._decode(end, True)
            self._end(end)
            self._open = None
        current = self.endpointer.current
        heard, self._heard = self._heard, False
        if current is None:
            self._silence(self.buffer.frames_ready)
        elif heard or current is not self._open:
            self._enter(current)
            events += yield from self._decode(self.buffer.frames_ready, False)
        # else: a pause inside the utterance: nothing new to hear, the decoder waits
        return events

    def _enter(self, utterance) -> None:
        if utterance is not self._open:
            self._open = utterance
            self._begin(utterance.start // HOP)

    def _begin(self, first_frame: int) -> None:
        raise NotImplementedError

    def _end(self, end_frame: int) -> None:
        raise NotImplementedError

    def _silence(self, now_frame: int) -> None:
        raise NotImplementedError

    def _decode(self, end_frame: int, final: bool) -> Update:
        raise NotImplementedError
