"""Live streams on worker threads: audio is handed over as it arrives and decoded as soon as a
worker is free.

    live = LiveScheduler(on_events, workers=2)    # on_events(session, events or exception)
    live.feed(session, pcm)                       # returns at once
    live.finish(session)                          # or live.cancel(session): drop it
    live.join()                                   # wait until everything handed over is decoded
    live.close()

A worker takes the stream whose audio has waited longest (a stream is decoded by one worker at a
time, so its updates stay in order) and decodes everything it holds in one update, at its last
chunk boundary (`coalesce`): a stream that fell behind catches up instead of queueing. No worker
waits for another, and no stream waits for another stream's update. On a CPU, load the model with
one intra-op thread and give one worker per core (BENCHMARKS.md: four whisper-base streams on 2
cores).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable, Iterator

import numpy as np

from .scheduler import FINISH, StreamScheduler
from .session import StreamSession, as_pcm

Events = Callable[[StreamSession, Any], None]


class LiveScheduler:
    """Sessions fed as their audio arrives, decoded on `workers` threads. `on_events(session,
    events)` is called from a worker's thread with the events of each update (a list, possibly
    empty), or with the exception the update raised (that stream's only: the others go on). The
    finish is reported in a call of its own, the stream's last (`session.finished` is then True),
    even after a failed update."""

    def __init__(self, on_events: Events, workers: int = 1):
        if int(workers) < 1:
            raise ValueError("workers must be >= 1")
        self.on_events = on_events
        self._cond = threading.Condition()
        self._closing = False
        # session -> [pieces, finish?]: handed over, not yet taken; oldest first
        self._waiting: dict[StreamSession, list] = {}
        self._running: set[StreamSession] = set()
        self._finished: weakref.WeakSet = weakref.WeakSet()
        self._errors: list[Exception] = []     # raised by on_events, for join to raise
        self._busy: list[float] = [0.0] * int(workers)
        self._updates = 0                      # updates with new audio
        self._calls: dict[Any, int] = {}       # calls made by all updates, by kind
        self._items: dict[Any, int] = {}       # ...and the work items they carried
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"qasr-live-{i}", daemon=True)
                         for i in range(int(workers))]
        for t in self._threads:
            t.start()

    def feed(self, session: StreamSession, pcm: Any) -> None:
        """Hand over samples (16 kHz mono, float or int16); returns at once. Samples that are not
        audio raise here, in the caller's thread."""
        self._hand_over(session, as_pcm(pcm), False)

    def finish(self, session: StreamSession) -> None:
        """End of the session's audio: what is left is decoded and committed."""
        self._hand_over(session, None, True)

    def cancel(self, session: StreamSession) -> None:
        """Forget a stream (its listener went away): the audio it has waiting is dropped, and it
        takes no more. An update a worker is running now still finishes and is reported."""
        with self._cond:
            self._waiting.pop(session, None)
            self._finished.add(session)
            self._cond.notify_all()

    def join(self) -> None:
        """Wait until everything handed over so far has been decoded and reported. An exception
        that `on_events` raised on a worker is raised here."""
        with self._cond:
            while self._waiting or self._running:
                self._cond.wait()
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Decode what was handed over, then stop the workers (errors of `on_events` not yet
        raised by `join` are dropped)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def __enter__(self) -> "LiveScheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def busy_s(self) -> list[float]:
        """Seconds each worker has spent decoding."""
        return list(self._busy)

    def counts(self) -> tuple[int, dict[Any, int], dict[Any, int]]:
        """(updates with new audio, calls by kind, work items by kind) so far."""
        with self._cond:
            return self._updates, dict(self._calls), dict(self._items)

    def _hand_over(self, session: StreamSession, pcm: np.ndarray | None, finish: bool) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the scheduler is closed")
            if session in self._finished or session.finished:
                raise RuntimeError("the stream is finished; open a new one")
            if finish:
                self._finished.add(session)
            entry = self._waiting.setdefault(session, [[], False])
            if pcm is not None and len(pcm):
                entry[0].append(pcm)
            entry[1] = entry[1] or finish
            self._cond.notify_all()

    def _take(self) -> tuple[StreamSession, list] | None:
        """The longest-waiting session that no worker is decoding (None once closed and idle)."""
        with self._cond:
            while True:
                for session in self._waiting:
                    if session not in self._running:
                        self._running.add(session)
                        return session, self._waiting.pop(session)
                if self._closing and not self._waiting:
                    return None
                self._cond.wait()

    def _work(self, index: int) -> None:
        scheduler = StreamScheduler()   # this worker's: one session per step
        while (taken := self._take()) is not None:
            session, (pieces, finish) = taken
            started = time.perf_counter()
            for result in self._update(scheduler, session, pieces, finish):
                self._busy[index] += time.perf_counter() - started
                try:
                    self.on_events(session, result)
                except Exception as exc:   # the caller's handler failed: raised by join; the worker goes on
                    with self._cond:
                        self._errors.append(exc)
                started = time.perf_counter()
            with self._cond:
                self._running.discard(session)
                self._updates += bool(pieces)
                for kind, n in scheduler.calls.items():
                    self._calls[kind] = self._calls.get(kind, 0) + n
                for kind, n in scheduler.items.items():
                    self._items[kind] = self._items.get(kind, 0) + n
                scheduler.calls.clear()
                scheduler.items.clear()
                self._cond.notify_all()

    @staticmethod
    def _update(scheduler: StreamScheduler, session: StreamSession, pieces: list, finish: bool) -> Iterator[Any]:
        """All the session's waiting audio in one update, then its finish if asked for. Yields each
        one's events (or the exception it raised) as soon as it is done: a failed update does not
        keep the finish from committing the rest, and `session.finished` is set only for the
        finish's report."""
        if pieces or not finish:
            try:
                (events,) = scheduler.step([(session, np.concatenate(pieces))], coalesce=True) if pieces else ([],)
            except Exception as exc:   # a failed call fails this stream's update, not the worker
                events = exc
            yield events
        if finish:
            try:
                (rest,) = scheduler.step([(session, FINISH)])
            except Exception as exc:
                rest = exc
            yield rest
