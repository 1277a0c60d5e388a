"""Live streams on lanes: audio is handed over as it arrives and decoded on the lanes' threads.

    live = LiveScheduler(on_events, lanes=2)      # on_events(session, events or exception)
    live.feed(session, pcm)                       # returns at once
    live.finish(session)
    live.join()                                   # wait until everything handed over is decoded
    live.close()

Each session belongs to one lane (dealt in turn as they first appear). A lane's thread waits for
audio, takes everything waiting for its sessions, and steps them together through a
`StreamScheduler` (their calls batched): a session handed several chunks since its last update
decodes once, at its last chunk boundary (`coalesce`), so a lane that falls behind catches up
instead of queueing. Lanes do not wait for each other, as the lanes of one `StreamScheduler.step`
do. On a CPU, load the model with one intra-op thread and give one lane per core (BENCHMARKS.md:
four whisper-base streams on 2 cores).
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable

import numpy as np

from .scheduler import FINISH, StreamScheduler
from .session import StreamSession, as_pcm

Events = Callable[[StreamSession, Any], None]


class _Lane:
    def __init__(self, live: "LiveScheduler", index: int):
        self.live = live
        self.waiting: dict[StreamSession, list] = {}    # session -> [pieces, finish?], in arrival order
        self.scheduler = StreamScheduler()
        self.busy_s = 0.0                                # time spent decoding
        self.updates = 0                                 # sessions stepped with new audio
        self.thread = threading.Thread(target=self._run, name=f"qasr-live-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        live = self.live
        while True:
            with live._cond:
                while not self.waiting and not live._closing:
                    live._cond.wait()
                if not self.waiting:
                    return
                work, self.waiting = self.waiting, {}
            started = time.perf_counter()
            try:
                out = self._step(work)
            except Exception as exc:   # a failed call fails the streams that were in it, not the lane
                out = {s: exc for s in work}
            self.busy_s += time.perf_counter() - started
            for session, result in out.items():
                try:
                    live.on_events(session, result)
                except Exception as exc:   # the caller's handler fails: raised by join, the lane goes on
                    with live._cond:
                        live._errors.append(exc)
            with live._cond:
                live._pending -= len(work)
                for session, (_, finish) in work.items():
                    if finish:
                        live._lane_of.pop(id(session), None)
                live._cond.notify_all()

    def _step(self, work: dict[StreamSession, list]) -> dict[StreamSession, Any]:
        """One update of every session in `work` (all its waiting audio at once), then the
        finishes asked for."""
        audio = [(s, np.concatenate(pieces)) for s, (pieces, _) in work.items() if pieces]
        self.updates += len(audio)
        out: dict[StreamSession, Any] = {}
        for (session, _), result in zip(audio, self.scheduler.step(audio, coalesce=True)):
            out[session] = result
        ending = [s for s, (_, finish) in work.items() if finish and not isinstance(out.get(s), Exception)]
        for session, result in zip(ending, self.scheduler.step([(s, FINISH) for s in ending])):
            before = out.get(session, [])
            out[session] = result if isinstance(result, Exception) else before + result
        return out


class LiveScheduler:
    """Sessions fed as their audio arrives, decoded on `lanes` threads. `on_events(session,
    events)` is called from a lane's thread with the events of each update (a list, possibly
    empty), or with the exception the update raised (that stream's only: the others go on)."""

    def __init__(self, on_events: Events, lanes: int = 1):
        if int(lanes) < 1:
            raise ValueError("lanes must be >= 1")
        self.on_events = on_events
        self._cond = threading.Condition()
        self._closing = False
        self._pending = 0                      # sessions with audio handed over and not yet decoded
        self._lane_of: dict[int, _Lane] = {}
        self._finished: weakref.WeakSet = weakref.WeakSet()
        self._errors: list[Exception] = []     # raised by on_events, for join to raise
        self.lanes = [_Lane(self, i) for i in range(int(lanes))]

    def feed(self, session: StreamSession, pcm: Any) -> None:
        """Hand over samples (16 kHz mono, float or int16); returns at once. Samples that are not
        audio raise here, in the caller's thread."""
        self._hand_over(session, as_pcm(pcm), False)

    def finish(self, session: StreamSession) -> None:
        """End of the session's audio: what is left is decoded and committed on its lane."""
        self._hand_over(session, None, True)

    def join(self) -> None:
        """Wait until everything handed over so far has been decoded and reported. An exception
        that `on_events` raised on a lane is raised here."""
        with self._cond:
            while self._pending:
                self._cond.wait()
            errors, self._errors = self._errors, []
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Decode what was handed over, then stop the lanes' threads (errors of `on_events` not
        yet raised by `join` are dropped)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        for lane in self.lanes:
            lane.thread.join()

    def __enter__(self) -> "LiveScheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def busy_s(self) -> list[float]:
        """Seconds each lane has spent decoding."""
        return [lane.busy_s for lane in self.lanes]

    def counts(self) -> tuple[int, dict[Any, int], dict[Any, int]]:
        """(updates with new audio, batched calls by kind, work items by kind) over all lanes."""
        calls: dict[Any, int] = {}
        items: dict[Any, int] = {}
        for lane in self.lanes:
            for kind, n in lane.scheduler.calls.items():
                calls[kind] = calls.get(kind, 0) + n
            for kind, n in lane.scheduler.items.items():
                items[kind] = items.get(kind, 0) + n
        return sum(lane.updates for lane in self.lanes), calls, items

    def _hand_over(self, session: StreamSession, pcm: np.ndarray | None, finish: bool) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError("the scheduler is closed")
            if session in self._finished or session.finished:
                raise RuntimeError("the stream is finished; open a new one")
            if finish:
                self._finished.add(session)
            lane = self._lane_of.get(id(session))
            if lane is None:
                lane = self._lane_of[id(session)] = self.lanes[len(self._lane_of) % len(self.lanes)]
            if session not in lane.waiting:
                lane.waiting[session] = [[], False]
                self._pending += 1
            entry = lane.waiting[session]
            if pcm is not None and len(pcm):
                entry[0].append(pcm)
            entry[1] = entry[1] or finish
            self._cond.notify_all()
