"""Many streams stepped together: their updates run side by side, and the work they ask for is
grouped by kind, so the encoder and decoder calls of all streams are batched. (A `LiveScheduler`
decodes streams as their audio arrives, on worker threads.)"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from .events import StreamEvent
from .session import StreamSession, Update, Work

FINISH = None   # in place of samples: the stream ended


class StreamScheduler:
    """Feeds several sessions at once. `step([(session, samples or FINISH), ...])` returns, per
    input, the events that became ready, or the exception its samples raised (a bad chunk fails
    that stream's step only; the session stays as it was). A session takes its audio in order:
    give each one at most one piece of audio per step."""

    def __init__(self) -> None:
        self.calls: dict[Any, int] = {}    # batched calls made, by work kind ("encode", "decode")
        self.items: dict[Any, int] = {}    # ...and the work items they carried

    def step(self, inputs: Sequence[tuple[StreamSession, Any]], coalesce: bool = False
             ) -> list[list[StreamEvent] | Exception]:
        """With `coalesce`, a stream given more than a chunk of audio decodes once, at its last
        chunk boundary (what a real-time server does when it falls behind)."""
        results: list[list[StreamEvent] | Exception] = [[] for _ in inputs]
        queues: dict[int, Iterator[Update]] = {}
        running: dict[int, Update] = {}
        waiting: dict[int, Work] = {}
        for i, (session, pcm) in enumerate(inputs):
            queues[i] = session.finish_updates() if pcm is FINISH else session.updates(pcm, coalesce)
            self._start_next(i, queues, running, waiting, results)
        while waiting:
            groups: dict[Any, list[int]] = {}
            for i, work in waiting.items():
                groups.setdefault(work.key, []).append(i)
            for key, members in groups.items():
                # keys are (owner, kind, what else must match): counted by kind
                kind = key[1] if isinstance(key, tuple) and len(key) > 1 else key
                self.calls[kind] = self.calls.get(kind, 0) + 1
                self.items[kind] = self.items.get(kind, 0) + len(members)
                outputs = waiting[members[0]].run([waiting[i].item for i in members])
                for i, out in zip(members, outputs):
                    self._advance(i, out, queues, running, waiting, results)
        return results

    def _start_next(self, i, queues, running, waiting, results) -> None:
        try:
            update = next(queues[i], None)
        except (ValueError, TypeError, RuntimeError) as exc:   # a bad chunk: this stream only
            results[i] = exc
            return
        if update is None:
            return
        running[i] = update
        self._advance(i, _FIRST, queues, running, waiting, results)

    def _advance(self, i, value, queues, running, waiting, results) -> None:
        update = running[i]
        try:
            waiting[i] = next(update) if value is _FIRST else update.send(value)
        except StopIteration as stop:
            waiting.pop(i, None)
            del running[i]
            results[i] += stop.value or []
            self._start_next(i, queues, running, waiting, results)
        except Exception as exc:   # a failing stream fails alone; the others go on
            waiting.pop(i, None)
            del running[i]
            results[i] = exc


_FIRST = object()
