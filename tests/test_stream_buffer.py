"""The C++ streaming ring buffer (`_core.StreamBuffer`): frames, bounds and window bookkeeping."""

from __future__ import annotations

import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from qasr_edge import _core

FIXTURES = Path(__file__).parent / "fixtures"
HOP = 160                    # samples per frame
SECOND = 16000               # samples
FEED = 10240                 # samples, 640 ms: the streaming step of a live session
CHUNK, WINDOW_CHUNKS = 100, 8  # Qwen3-ASR: 100 frames per conv chunk, 8 chunks per attention window
WINDOW = CHUNK * WINDOW_CHUNKS  # 800 frames, 8 s
MIN_HISTORY = WINDOW * HOP + 400


def read_wav16(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768.0


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SECOND))).astype(np.float32)


def make(n_mels: int = 80, history: int = 20 * SECOND, chunk: int = CHUNK, window_chunks: int = WINDOW_CHUNKS):
    return _core.StreamBuffer(n_mels, chunk, window_chunks, history)


def frames_computable(seen: int) -> int:
    """Frames a stream can emit before it knows the end: frame t needs samples up to t*160 + 200."""
    return 0 if seen <= 200 else (seen - 200) // HOP + 1


def sizes_for(kind: str, n: int, seed: int = 0) -> list[int]:
    if kind == "all":
        return [n]
    if kind == "random":
        sizes = list(np.random.default_rng(seed).integers(0, 3000, size=n + 1))  # zeros included
        return sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    step = {"1": 1, "7": 7, "10ms": 160, "640ms": FEED}[kind]
    return [step] * -(-n // step)


def feed(buf, audio: np.ndarray, sizes) -> None:
    """Feeds `audio` in pieces, checking each accept's count against the state it reports."""
    pos = 0
    for size in sizes:
        before = buf.frames_ready
        new = buf.accept(audio[pos : pos + size])
        pos = min(pos + size, len(audio))
        assert isinstance(new, int) and new == buf.frames_ready - before
        assert buf.samples_seen == pos and buf.frames_ready == frames_computable(pos)
    assert pos == len(audio)


# --- frames and samples equal the offline front end ---------------------------------------


@pytest.mark.parametrize("kind", ["1", "7", "10ms", "640ms", "random", "all"])
@pytest.mark.parametrize("n_mels", [80, 128])
def test_frames_equal_log_mel_for_any_feed_size(kind, n_mels):
    audio = read_wav16(FIXTURES / "en_flite.wav")  # 3.8 s
    if kind == "1":
        audio = audio[: int(0.3 * SECOND) + 37]  # the per-sample loop on a short signal
    buf = make(n_mels)
    feed(buf, audio, sizes_for(kind, len(audio)))
    offline = _core.log_mel(audio, n_mels)
    streamed = buf.frames(0, buf.frames_ready)
    assert streamed.dtype == np.float32 and streamed.flags.c_contiguous
    assert streamed.shape == (n_mels, frames_computable(len(audio)))
    np.testing.assert_array_equal(streamed, offline[:, : buf.frames_ready])
    # the tail, with reflect padding at the end, completes the spectrogram
    tail = buf.finish()
    assert tail == offline.shape[1] - streamed.shape[1] and buf.finished
    assert buf.frames_ready == len(audio) // HOP
    np.testing.assert_array_equal(buf.frames(0, buf.frames_ready), offline)
    samples = buf.samples(0, buf.samples_seen)
    assert samples.dtype == np.float32 and samples.shape == audio.shape
    np.testing.assert_array_equal(samples, audio)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_arbitrary_reads_match_offline(n_mels):
    audio = noise(12.3, seed=n_mels)
    buf = make(n_mels, history=13 * SECOND)
    feed(buf, audio, sizes_for("random", len(audio), seed=3))
    buf.finish()
    offline = _core.log_mel(audio, n_mels)
    rng = np.random.default_rng(5)
    for _ in range(50):
        a, b = sorted(int(x) for x in rng.integers(0, buf.frames_ready + 1, 2))
        np.testing.assert_array_equal(buf.frames(a, b), offline[:, a:b])
        s, e = sorted(int(x) for x in rng.integers(0, buf.samples_seen + 1, 2))
        np.testing.assert_array_equal(buf.samples(s, e), audio[s:e])
    assert buf.frames(7, 7).shape == (n_mels, 0) and buf.samples(9, 9).shape == (0,)


def test_float64_and_lists_are_converted_and_empty_input_is_fine():
    audio = read_wav16(FIXTURES / "de.wav")
    ref = make()
    ref.accept(audio)
    buf = make()
    assert buf.accept(np.zeros(0, np.float32)) == 0 and buf.samples_seen == 0
    buf.accept(audio[:1000].astype(np.float64))
    buf.accept(audio[1000:1500].tolist())
    buf.accept(np.repeat(audio[1500:], 2)[::2])  # a non-contiguous view
    np.testing.assert_array_equal(buf.frames(0, buf.frames_ready), ref.frames(0, ref.frames_ready))
    np.testing.assert_array_equal(buf.samples(0, buf.samples_seen), audio)


# --- window bookkeeping ---------------------------------------------------------------------


def test_window_bookkeeping_by_hand():
    buf = make(80, history=30 * SECOND)
    assert (buf.chunk_frames, buf.window_chunks, buf.window_frames) == (100, 8, 800)
    assert (buf.frames_ready, buf.complete_chunks, buf.final_windows, buf.open_window) == (0, 0, 0, (0, 0))
    audio = noise(21.0)

    buf.accept(audio[:127840])  # 7.99 s: frames up to (127840 - 200) // 160 = 797
    assert buf.frames_ready == 798 and buf.complete_chunks == 7
    assert buf.final_windows == 0 and buf.open_window == (0, 798)
    assert buf.window(0) == (0, 798)
    with pytest.raises(IndexError):
        buf.window(1)  # starts at frame 800 > 798

    buf.accept(audio[127840:128000])  # 8.0 s: frame 799 still needs 40 samples of lookahead
    assert buf.frames_ready == 799 and buf.complete_chunks == 7
    assert buf.final_windows == 0 and buf.open_window == (0, 799)

    buf.accept(audio[128000:128040])  # 8.0025 s: frame 799 complete, so is window 0
    assert buf.frames_ready == 800 and buf.complete_chunks == 8
    assert buf.final_windows == 1 and buf.open_window == (800, 800)
    assert buf.window(0) == (0, 800) and buf.window(1) == (800, 800)

    buf.accept(audio[128040:328000])  # 20.5 s: 2049 frames, 20 whole chunks, 2 whole windows
    assert buf.frames_ready == 2049 and buf.complete_chunks == 20
    assert buf.final_windows == 2 and buf.open_window == (1600, 2049)
    assert buf.window(1) == (800, 1600) and buf.window(2) == (1600, 2049)

    assert buf.finish() == 1  # 20.5 s = 2050 frames; chunk 20 is a partial tail of 50 frames
    assert buf.frames_ready == 2050 and buf.complete_chunks == 21
    assert buf.final_windows == 3 and buf.open_window == (2050, 2050)  # the partial window is final
    assert buf.window(2) == (1600, 2050)
    with pytest.raises(IndexError, match="window 3"):
        buf.window(3)
    assert buf.finish() == 0 and buf.final_windows == 3

    buf.reset()  # 16.0 s exactly, finished: two whole windows, nothing partial
    buf.accept(audio[: 16 * SECOND])
    assert buf.frames_ready == 1599 and buf.final_windows == 1 and buf.open_window == (800, 1599)
    buf.finish()
    assert buf.frames_ready == 1600 and buf.complete_chunks == 16
    assert buf.final_windows == 2 and buf.open_window == (1600, 1600) and buf.window(2) == (1600, 1600)


def test_short_stream_after_finish():
    buf = make(80)
    buf.accept(noise(0.5))
    assert (buf.frames_ready, buf.complete_chunks, buf.final_windows, buf.open_window) == (49, 0, 0, (0, 49))
    buf.finish()
    assert (buf.frames_ready, buf.complete_chunks, buf.final_windows, buf.open_window) == (50, 1, 1, (50, 50))
    assert buf.window(0) == (0, 50)
    empty = make(80)
    empty.finish()
    assert (empty.frames_ready, empty.complete_chunks, empty.final_windows, empty.open_window) == (0, 0, 0, (0, 0))


def window_states(audio: np.ndarray, inner: str, chunk: int, window_chunks: int) -> list[tuple]:
    """(final_windows, complete_chunks, open_window) after each 640 ms of audio, fed underneath in `inner` pieces."""
    buf = make(80, history=30 * SECOND, chunk=chunk, window_chunks=window_chunks)
    states = []
    for start in range(0, len(audio), FEED):
        step = audio[start : start + FEED]
        feed_sizes = sizes_for(inner, len(step), seed=start)
        pos = 0
        for size in feed_sizes:
            buf.accept(step[pos : pos + size])
            pos += size
        states.append((buf.final_windows, buf.complete_chunks, buf.open_window))
    buf.finish()
    states.append((buf.final_windows, buf.complete_chunks, buf.open_window))
    return states


@pytest.mark.parametrize("chunk, window_chunks", [(CHUNK, WINDOW_CHUNKS), (13, 3)])
def test_final_windows_do_not_depend_on_feed_granularity(chunk, window_chunks):
    audio = noise(17.3, seed=11)
    expected = window_states(audio, "640ms", chunk, window_chunks)
    for inner in ("1", "random"):
        assert window_states(audio, inner, chunk, window_chunks) == expected
    # ...and they follow the stream's frames: whole windows of whole chunks while streaming
    window = chunk * window_chunks
    for k, (final, chunks, open_window) in enumerate(expected[:-1], start=1):
        ready = frames_computable(min(k * FEED, len(audio)))
        assert (final, chunks, open_window) == (ready // window, ready // chunk, (ready // window * window, ready))
    assert [s[0] for s in expected] == sorted(s[0] for s in expected)  # never goes back
    if chunk == CHUNK:
        assert [s[0] for s in expected[:-1]].count(0) == 12  # step 13 (8.32 s) is the first past 8.0025 s
        assert expected[-1][0] == 3  # 17.3 s finished: two whole windows and a final partial one


# --- bounded memory over a long stream ------------------------------------------------------


def resident_bytes() -> int:
    import psutil   # the test extra installs it

    return psutil.Process().memory_info().rss


def test_ten_minutes_in_bounded_memory():
    n_mels, history = 128, 20 * SECOND
    audio = noise(600.0, seed=42)  # allocated (and touched) before measuring
    buf = make(n_mels, history=history)
    assert buf.frame_capacity == history // HOP + 1
    rss_at_minute = {}
    for k, start in enumerate(range(0, len(audio), FEED), start=1):
        buf.accept(audio[start : start + FEED])
        seen = min(k * FEED, len(audio))
        if seen > history:
            assert buf.first_sample == seen - history  # the ring overwrote the oldest samples
        if buf.frames_ready > buf.frame_capacity:
            assert buf.first_frame == buf.frames_ready - buf.frame_capacity
        minute = seen // (60 * SECOND)
        if seen % (60 * SECOND) < FEED:
            rss_at_minute.setdefault(minute, resident_bytes())
    buf.finish()
    assert buf.samples_seen == len(audio) and buf.frames_ready == len(audio) // HOP == 60000
    assert buf.first_sample == len(audio) - history == 9280000
    assert buf.first_frame == 60000 - buf.frame_capacity == 58000 - 1
    assert buf.dropped_windows == buf.first_frame // WINDOW == 72
    growth = rss_at_minute[10] - rss_at_minute[2]
    assert growth < 3 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB from minute 2 to minute 10"

    # dropped ranges are gone; what is held is still exactly the offline front end's output
    with pytest.raises(IndexError, match=r"held range is \[57999, 60000\)"):
        buf.frames(0, 100)
    with pytest.raises(IndexError):
        buf.frames(buf.first_frame - 1, buf.first_frame + 10)
    with pytest.raises(IndexError, match=r"held range is \[9280000, 9600000\)"):
        buf.samples(9279999, 9280001)
    offline = _core.log_mel(audio, n_mels)
    last = buf.frames_ready - WINDOW
    np.testing.assert_array_equal(buf.frames(last, buf.frames_ready), offline[:, last:])
    np.testing.assert_array_equal(buf.frames(buf.first_frame, buf.frames_ready), offline[:, buf.first_frame :])
    np.testing.assert_array_equal(buf.samples(buf.first_sample, buf.samples_seen), audio[-history:])


def test_one_huge_accept_keeps_only_the_history():
    audio = noise(45.0, seed=9)
    buf = make(80, history=MIN_HISTORY)
    assert buf.accept(audio) == frames_computable(len(audio))
    assert buf.first_sample == len(audio) - MIN_HISTORY
    assert buf.first_frame == buf.frames_ready - buf.frame_capacity
    offline = _core.log_mel(audio, 80)
    np.testing.assert_array_equal(buf.frames(buf.first_frame, buf.frames_ready),
                                  offline[:, buf.first_frame : buf.frames_ready])
    np.testing.assert_array_equal(buf.samples(buf.first_sample, buf.samples_seen), audio[-MIN_HISTORY:])


# --- drop_before ----------------------------------------------------------------------------


def test_drop_before_moves_the_bounds():
    audio = noise(10.0, seed=4)
    buf = make(80)
    buf.accept(audio)
    offline = _core.log_mel(audio, 80)
    ready, seen = buf.frames_ready, buf.samples_seen
    assert (buf.first_frame, buf.first_sample, buf.dropped_windows) == (0, 0, 0)

    buf.drop_before(300)
    assert (buf.first_frame, buf.first_sample) == (300, 300 * HOP)
    np.testing.assert_array_equal(buf.frames(300, 310), offline[:, 300:310])
    np.testing.assert_array_equal(buf.samples(48000, 48010), audio[48000:48010])
    with pytest.raises(IndexError, match=r"\[299, 310\) is not held; the held range is \[300, 999\)"):
        buf.frames(299, 310)
    with pytest.raises(IndexError, match=r"the held range is \[48000, 160000\)"):
        buf.samples(47999, 48000)

    buf.drop_before(100)  # never moves back
    assert (buf.first_frame, buf.first_sample) == (300, 300 * HOP)

    buf.drop_before(WINDOW)
    assert buf.dropped_windows == 1 and buf.final_windows == 1

    buf.drop_before(10**12)  # past what was produced: clamped to it
    assert (buf.first_frame, buf.first_sample) == (ready, seen)
    assert buf.frames(ready, ready).shape == (80, 0) and buf.samples(seen, seen).shape == (0,)
    with pytest.raises(IndexError):
        buf.frames(ready - 1, ready)

    more = noise(1.0, seed=5)
    buf.accept(more)  # new data after the dropped point is readable
    full = np.concatenate([audio, more])
    np.testing.assert_array_equal(buf.frames(ready, buf.frames_ready),
                                  _core.log_mel(full, 80)[:, ready : buf.frames_ready])
    np.testing.assert_array_equal(buf.samples(seen, buf.samples_seen), more)
    assert (buf.first_frame, buf.first_sample) == (ready, seen)

    buf.reset()
    assert (buf.samples_seen, buf.frames_ready, buf.first_frame, buf.first_sample, buf.finished) == (0, 0, 0, 0, False)


# --- errors ---------------------------------------------------------------------------------


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match=r"history_samples must be >= 128400.*got 128399"):
        _core.StreamBuffer(80, CHUNK, WINDOW_CHUNKS, MIN_HISTORY - 1)
    _core.StreamBuffer(80, CHUNK, WINDOW_CHUNKS, MIN_HISTORY)  # the minimum itself is fine
    with pytest.raises(ValueError, match=r">= 2480"):
        _core.StreamBuffer(80, 13, 1, 2000)
    with pytest.raises(ValueError, match=r"history_samples must be >= 128400.*got -1"):
        _core.StreamBuffer(80, CHUNK, WINDOW_CHUNKS, -1)
    with pytest.raises(ValueError, match="n_mels"):
        _core.StreamBuffer(0, CHUNK, WINDOW_CHUNKS, 20 * SECOND)
    with pytest.raises(ValueError, match="chunk_frames"):
        _core.StreamBuffer(80, 0, WINDOW_CHUNKS, 20 * SECOND)
    with pytest.raises(ValueError, match="window_chunks"):
        _core.StreamBuffer(80, CHUNK, -2, 20 * SECOND)
    with pytest.raises(ValueError, match="too large"):
        _core.StreamBuffer(80, 2**62, 2**62, 2**62)

    buf = make(80)
    with pytest.raises(ValueError, match="1-D"):
        buf.accept(np.zeros((1, 1600), np.float32))
    with pytest.raises(TypeError, match="int16"):
        buf.accept(np.zeros(1600, np.int16))
    assert buf.samples_seen == 0  # refused input leaves no trace

    buf.accept(noise(1.0))
    with pytest.raises(IndexError, match="start 10 > stop 5"):
        buf.frames(10, 5)
    with pytest.raises(IndexError, match=r"held range is \[0, 99\)"):
        buf.frames(0, 100)
    with pytest.raises(IndexError, match=r"held range is \[0, 16000\)"):
        buf.samples(0, 16001)
    with pytest.raises(IndexError, match="negative"):
        buf.samples(-1, 10)
    with pytest.raises(IndexError, match="negative"):
        buf.window(-1)
    with pytest.raises(ValueError, match="drop_before"):
        buf.drop_before(-1)

    buf.finish()
    with pytest.raises(RuntimeError, match=r"stream finished; call reset\(\)"):
        buf.accept(noise(0.1))
    assert buf.finish() == 0
    buf.reset()
    audio = noise(2.0, seed=8)
    buf.accept(audio)  # a reset stream starts over from sample 0
    buf.finish()
    np.testing.assert_array_equal(buf.frames(0, buf.frames_ready), _core.log_mel(audio, 80))


def test_properties():
    buf = _core.StreamBuffer(n_mels=128, chunk_frames=100, window_chunks=8, history_samples=20 * SECOND)
    assert (buf.n_mels, buf.chunk_frames, buf.window_chunks, buf.window_frames) == (128, 100, 8, 800)
    assert (buf.history_samples, buf.frame_capacity) == (320000, 2001)
    assert (buf.samples_seen, buf.frames_ready, buf.finished, buf.first_sample, buf.first_frame) == (0, 0, False, 0, 0)
    assert (buf.complete_chunks, buf.final_windows, buf.open_window, buf.dropped_windows) == (0, 0, (0, 0), 0)
    with pytest.raises(AttributeError):
        buf.first_frame = 5


# --- threads --------------------------------------------------------------------------------


def test_reads_while_another_thread_feeds():
    audio = noise(30.0, seed=12)
    offline = _core.log_mel(audio, 80)
    buf = make(80, history=MIN_HISTORY)
    done = threading.Event()
    errors = []

    def writer():
        try:
            for start in range(0, len(audio), 1600):
                buf.accept(audio[start : start + 1600])
            buf.finish()
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        first, ready = buf.first_frame, buf.frames_ready
        stop = min(first + 50, ready)
        try:
            got = buf.frames(first, stop)
        except IndexError:  # the ring moved on between the two reads
            continue
        if not np.array_equal(got, offline[:, first:stop]):
            errors.append((first, stop))
    thread.join()
    assert not errors
    assert buf.frames_ready == offline.shape[1]
    np.testing.assert_array_equal(buf.frames(buf.first_frame, buf.frames_ready), offline[:, buf.first_frame :])
