"""Streams over TCP: one model serves many live streams, one per connection (`qasr-edge serve`).

The protocol, per connection:
- the client may start with one header line, `QASR {json}\\n`, whose object holds the stream's
  options (`language`, `context`, `chunk_ms`, `endpoint_ms`, `beam_size`, `commit_prob`,
  `partials`; the server's own are the defaults). Without it the first bytes are audio.
- then raw 16 kHz 16-bit little-endian mono PCM, in pieces of any size, as it is captured;
- the client shuts down its sending side (or closes) when the audio ends. A connection that sends
  nothing for `idle_timeout` seconds has ended its audio too.
- The server sends the stream's events as JSON lines, as they become ready (the fields of
  `qasr-edge stream`), and closes the connection after the last final. A stream's failed update
  is an `{"type": "error", "message": ...}` line, and the stream goes on; a header the server
  cannot take, or a connection over `max_streams`, gets an error line and is closed. A client
  that goes away (a reset connection, or events it does not read for `idle_timeout`) has its
  stream dropped: what it had waiting is not decoded.

Connections are decoded by a `LiveScheduler`: audio is handed over as it arrives, and a stream
that fell behind decodes what it holds in one update. A slow reader does not hold up a worker:
each connection has its own writer thread.

    server = StreamServer(model, port=8765, workers=2)   # model loaded with threads / workers threads
    server.serve_forever()                               # or: threading.Thread(target=...), then close()
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from typing import Any, Iterable, Iterator

import numpy as np

from .live import LiveScheduler
from .session import StreamSession
from .sources import int16_samples, pcm_bytes

HEADER = b"QASR "          # a connection that starts with this sends its options first
MAX_HEADER = 4096          # bytes: a longer header line is refused
OPTIONS = ("language", "context", "chunk_ms", "endpoint_ms", "beam_size", "commit_prob", "partials")
_END = None                # on a connection's out queue: close after what came before


class StreamServer:
    """Serves `model.stream(...)` sessions to TCP clients (protocol: the module's text).
    `defaults` are the stream options of connections that do not set them; `max_streams` bounds
    the connections decoded at once; `idle_timeout` (seconds) ends a stream whose client sends
    nothing, and drops one whose client reads nothing, for that long."""

    def __init__(self, model, host: str = "127.0.0.1", port: int = 8765, workers: int = 1,
                 max_streams: int = 4, defaults: dict[str, Any] | None = None, idle_timeout: float = 60.0):
        if int(max_streams) < 1:
            raise ValueError("max_streams must be >= 1")
        if not idle_timeout > 0:
            raise ValueError("idle_timeout must be > 0 seconds")
        self.model = model
        self.max_streams = int(max_streams)
        self.idle_timeout = float(idle_timeout)
        self.defaults = dict(defaults or {})
        unknown = set(self.defaults) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown stream options: {sorted(unknown)}")
        model.stream(**self.defaults)   # options checked now, not at the first connection
        self._listener = socket.create_server((host, port))
        self._lock = threading.Lock()
        self._open: dict[StreamSession, _Connection] = {}
        self._closing = False
        self.live = LiveScheduler(self._on_events, workers)

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    def serve_forever(self) -> None:
        """Accept connections until `close()`; each is read on a thread of its own."""
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:   # the listener was closed
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True, name="qasr-conn").start()

    def close(self) -> None:
        """Stop accepting; commit and send what every open stream holds; close the connections."""
        with self._lock:
            self._closing = True
            sessions = list(self._open)
        try:
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes a thread blocked in accept()
        except OSError:
            pass
        self._listener.close()
        for session in sessions:
            try:
                self.live.finish(session)
            except RuntimeError:   # its client had finished it already
                pass
        self.live.close()   # decodes everything handed over; the finishes end their connections
        with self._lock:
            left = list(self._open.values())
        for conn in left:
            conn.out.put(_END)

    def __enter__(self) -> "StreamServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def streams(self) -> int:
        """Connections being decoded now."""
        with self._lock:
            return len(self._open)

    # -- per connection ---------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(self.idle_timeout)
        conn = _Connection(sock)
        conn.writer.start()
        session = None
        try:
            first, options = _read_header(sock)
            session = self._open_session(conn, options)
            for samples in int16_samples(_chunks(sock, first)):
                self.live.feed(session, samples)
        except (_Refused, ValueError, TypeError) as exc:   # a header or options it cannot take
            conn.send({"type": "error", "message": str(exc)})
        except socket.timeout:   # nothing came for idle_timeout: the audio has ended
            pass
        except OSError:   # the connection was reset: nobody is left to read the events
            if session is not None:
                self._drop(session)
            else:
                conn.out.put(_END)
            return
        except RuntimeError:   # the server is closing, or dropped the stream: it ends the connection
            return
        if session is None:
            conn.out.put(_END)
            return
        try:
            self.live.finish(session)   # the last events end the connection (_on_events)
        except RuntimeError:   # the server is closing, or dropped the stream
            pass

    def _open_session(self, conn: "_Connection", options: dict[str, Any]) -> StreamSession:
        with self._lock:
            if self._closing:
                raise _Refused("the server is closing")
            if len(self._open) >= self.max_streams:
                raise _Refused(f"busy: {self.max_streams} streams are open; try again later")
            session = self.model.stream(**{**self.defaults, **options})
            self._open[session] = conn
        conn.gone = lambda: self._drop(session)
        return session

    def _drop(self, session: StreamSession) -> None:
        """The client went away: forget its stream and close its connection."""
        with self._lock:
            conn = self._open.pop(session, None)
        self.live.cancel(session)
        if conn is not None:
            conn.out.put(_END)

    def _on_events(self, session: StreamSession, result: Any) -> None:
        with self._lock:
            conn = self._open.get(session)
        if conn is None:
            return
        if isinstance(result, Exception):
            conn.send({"type": "error", "message": f"{type(result).__name__}: {result}"})
        else:
            for event in result:
                conn.send(event.to_dict())
        if session.finished:   # the finish's report (LiveScheduler reports it last, and alone)
            with self._lock:
                self._open.pop(session, None)
            conn.out.put(_END)


class _Refused(Exception):
    pass


class _Connection:
    """A client's socket and the queue of lines its writer thread sends."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.out: queue.Queue = queue.Queue()
        self.gone = lambda: None   # called when a line cannot be sent
        self.writer = threading.Thread(target=self._write, daemon=True, name="qasr-conn-out")

    def send(self, obj: dict[str, Any]) -> None:
        self.out.put((json.dumps(obj, ensure_ascii=False) + "\n").encode())

    def _write(self) -> None:
        try:
            while (line := self.out.get()) is not _END:
                self.sock.sendall(line)
        except OSError:   # the client went away, or reads nothing: its stream is dropped
            self.gone()
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


def _chunks(sock: socket.socket, first: bytes) -> Iterator[bytes]:
    if first:
        yield first
    while data := sock.recv(65536):
        yield data


def _read_header(sock: socket.socket) -> tuple[bytes, dict[str, Any]]:
    """(the audio bytes read past the header, the header's options)."""
    data = b""
    while len(data) < len(HEADER) and data == HEADER[:len(data)]:
        more = sock.recv(MAX_HEADER)
        if not more:
            break
        data += more
    if not data.startswith(HEADER):
        return data, {}
    while b"\n" not in data:
        if len(data) > MAX_HEADER:
            raise _Refused(f"header line longer than {MAX_HEADER} bytes")
        more = sock.recv(MAX_HEADER)
        if not more:
            raise _Refused("the connection ended inside the header line")
        data += more
    line, rest = data.split(b"\n", 1)
    try:
        options = json.loads(line[len(HEADER):])
    except ValueError as exc:
        raise _Refused(f"header is not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise _Refused("header must be a JSON object of stream options")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise _Refused(f"unknown stream options {sorted(unknown)}; known: {', '.join(OPTIONS)}")
    return rest, options


# -- the client's side --------------------------------------------------------------------------

def stream_to_server(host: str, port: int, chunks: Iterable[np.ndarray],
                     options: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Send float or int16 chunks of 16 kHz audio to a server; yield its events (dicts) as they
    arrive, until it closes the connection. Audio is sent from a thread of its own, so events
    come back while it is still being sent. When `chunks` raises, the audio ends there (the
    server commits what it got) and the exception is raised after the last event."""
    sock = socket.create_connection((host, port))
    failed: list[BaseException] = []

    def send() -> None:
        try:
            if options:
                sock.sendall(HEADER + json.dumps(options).encode() + b"\n")
            for chunk in chunks:
                sock.sendall(pcm_bytes(chunk))
        except OSError:   # the server closed first (it refused the stream): its lines say why
            pass
        except Exception as exc:   # the source failed: the audio ends here
            failed.append(exc)
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    sender = threading.Thread(target=send, daemon=True, name="qasr-client-send")
    sender.start()
    try:
        with sock.makefile("rb") as lines:
            for line in lines:
                yield json.loads(line)
    finally:
        sender.join()
        sock.close()
    if failed:
        raise failed[0]
