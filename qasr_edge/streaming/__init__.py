"""Streaming recognition: sessions that take PCM as it arrives and emit partial and final text.

    session = model.stream(language=None, context="", chunk_ms=640)
    for pcm in source:
        for event in session.feed(pcm):
            ...
    events = session.finish()

Models stay stateless; everything a stream remembers lives in its session. A `StreamScheduler`
steps many sessions together and batches their encoder and decoder calls; a `LiveScheduler`
takes each stream's audio as it arrives and decodes it on worker threads, each stream as soon as
a worker is free; `server.StreamServer` serves such streams over TCP, one per connection.
"""

from .events import EVENT_TYPES, SAMPLE_RATE, StreamEvent, StreamOptions
from .live import LiveScheduler
from .scheduler import FINISH, StreamScheduler
from .session import StreamSession

__all__ = ["EVENT_TYPES", "FINISH", "LiveScheduler", "SAMPLE_RATE", "StreamEvent", "StreamOptions", "StreamScheduler",
           "StreamSession"]
