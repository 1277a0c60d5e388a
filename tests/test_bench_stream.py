"""`qasr-edge bench stream`: the command reports the documented keys; the lag and bucketing maths.

Timings are never asserted (a benchmark is not a test); only that the work was done and reported.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from qasr_edge.benchmark.stream import (bucket_medians, commit_lags, edge_medians, edit_distance, finals_in_order,
                                        realtime_lags, rotated, split_words, wer, word_ends)
from qasr_edge.streaming import StreamEvent

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = ("audio_s", "wall_s", "rtf", "load_s", "peak_rss_mb", "first_partial_s", "first_partial_wall_s",
        "commit_lag_median_s", "commit_lag_p95_s", "commit_lag_max_s", "commit_lag_words", "finals_in_order",
        "chunk_compute", "chunk_ms_at_10s", "chunk_ms_at_end", "flatness", "decoding_chunks", "final_text",
        "streams", "max_realtime_streams", "offline_text", "wer_stream_vs_offline", "wer_stream_vs_reference",
        "wer_offline_vs_reference", "machine", "workload")
STREAM_KEYS = ("streams", "workers", "staggered", "worker_busy", "rtf", "chunks_per_update", "realtime_lag_median_s",
               "end_delay_s", "keeps_up", "calls", "items", "realtime_lag_p95_s", "peak_rss_mb", "stream_lag_median_s",
               "stream_lag_p95_s", "live_delay_median_s", "live_delay_p95_s", "live_delay_max_s")


def final(text: str, start: float, end: float, emitted_at: float) -> StreamEvent:
    return StreamEvent("final", text, start, end, "en", emitted_at)


# -- pure functions ----------------------------------------------------------------------------

def test_words_split_at_spaces_and_scripts_without_spaces_into_characters():
    assert split_words(" Hello, big world.") == ["Hello,", "big", "world."]
    assert split_words(" meeting.") == ["meeting."]          # one spaced word stays whole
    assert split_words("你好世界") == ["你", "好", "世", "界"]
    assert split_words("   ") == []


def test_word_ends_spread_the_event_by_character_count():
    ends = word_ends(" ab abcd ab", 1.0, 2.0)   # 2 + 4 + 2 = 8 characters over 1 s
    assert [w for w, _ in ends] == ["ab", "abcd", "ab"]
    assert [t for _, t in ends] == pytest.approx([1.25, 1.75, 2.0])
    assert [t for _, t in word_ends("你好", 0.0, 1.0)] == pytest.approx([0.5, 1.0])
    assert word_ends(" x", 3.0, 3.0) == [("x", 3.0)]      # a final of zero length


def test_commit_lags_are_emission_minus_word_end_and_order_is_checked():
    finals = [final(" ab abcd ab", 1.0, 2.0, 2.56), final(" next", 2.0, 2.5, 3.2)]
    assert commit_lags(finals) == pytest.approx([1.31, 0.81, 0.56, 0.7])
    assert finals_in_order(finals)
    assert not finals_in_order([finals[1], finals[0]])                                  # starts before the end
    assert not finals_in_order([finals[0], final(" late", 2.0, 2.5, 2.0)])            # emitted earlier
    assert finals_in_order([final(" a", 0.0, 1.0, 1.0), final(" b", 1.0 - 5e-7, 1.5, 1.0)])   # 1 us slack
    assert commit_lags([]) == []


def test_bucketing_by_ten_seconds_and_the_edges():
    chunks = [(i * 0.64, 100.0 + (i >= 16) * 50 + (i >= 40) * 50) for i in range(50)]   # 0-32 s of 640 ms chunks
    buckets = bucket_medians(chunks)
    assert [b for b, _ in buckets] == [0.0, 10.0, 20.0, 30.0]
    assert buckets[0][1] == 100.0                          # chunks 0-15 start before 10 s (15 * 0.64 = 9.6)
    assert buckets[1][1] == 150.0 and buckets[3][1] == 200.0
    at_start, at_end, flat = edge_medians(chunks, 32.0)
    assert at_start == 125.0                               # 32 chunks start before 20 s: 16 at 100, 16 at 150
    assert at_end == 150.0                                 # chunks starting at or after 12 s: 150 x 21, 200 x 10
    assert flat == 1.2
    assert edge_medians([(0.0, 0.0)], 0.64) == (0.0, 0.0, None)   # silence: no ratio
    assert bucket_medians([]) == [] and edge_medians([], 0.0) == (None, None, None)


def test_realtime_lag_queues_rounds_behind_slow_ones():
    # rounds arrive every 0.5 s; the second takes 1.2 s, so the third waits for it
    lags = realtime_lags([0.1, 1.2, 0.1, 0.1], [0.5, 1.0, 1.5, 2.0])
    assert lags == pytest.approx([0.1, 1.2, 0.8, 0.4])


def test_word_error_rate_and_rotation():
    assert edit_distance("a b c".split(), "a x c d".split()) == 2
    assert wer("The cat, sat.", "the cat sat") == 0.0
    assert wer("one two three four", "one three four five") == 0.5
    assert wer("", "anything") is None
    audio = np.arange(16000 * 10, dtype=np.float32)
    assert np.array_equal(rotated(audio, 0), audio)
    assert rotated(audio, 1)[0] == 116800 and len(rotated(audio, 1)) == len(audio)   # 7.3 s in
    assert rotated(audio, 2)[0] == 73600                   # 14.6 s mod 10 s


# -- the command -------------------------------------------------------------------------------

def test_bench_stream_command(whisper_base_int8_package, tmp_path, monkeypatch, capsys):
    from qasr_edge.cli import main

    monkeypatch.setenv("QASR_EDGE_HOME", str(tmp_path / "home"))
    reference = tmp_path / "reference.txt"
    reference.write_text("Good morning everyone, and thank you for joining the weekly planning meeting.")
    code = main(["bench", "stream", "--model", str(whisper_base_int8_package), "--audio", str(FIXTURES / "long_en.wav"),
                 "--seconds", "6", "--chunk-ms", "640", "--threads", "2", "--streams", "1", "2", "--stagger",
                 "--offline", "--reference", str(reference), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    result = json.loads(out.out.strip().splitlines()[-1])
    for key in KEYS:
        assert key in result, key
    assert "commit lag" in out.err and "streams" in out.err   # the table went to stderr
    assert result["audio_s"] == pytest.approx(6.0) and result["rtf"] > 0 and result["wall_s"] > 0
    assert result["chunks"] == math.ceil(6.0 / 0.64) and 0 < result["decoding_chunks"] <= result["chunks"]
    assert result["final_text"] and result["offline_text"] and result["finals_in_order"] is True
    assert result["commit_lag_words"] >= 3
    for key in ("commit_lag_median_s", "commit_lag_p95_s", "commit_lag_max_s"):
        assert math.isfinite(result[key]) and result[key] >= 0, key
    assert result["commit_lag_median_s"] <= result["commit_lag_p95_s"] <= result["commit_lag_max_s"]
    assert 0 <= result["first_partial_s"] <= 6.0 and result["first_partial_wall_s"] > 0
    assert [b for b, _ in result["chunk_compute"]] == [0.0]
    assert result["flatness"] == pytest.approx(1.0)     # 6 s: the first and last 20 s are the same chunks
    for key in ("wer_stream_vs_offline", "wer_stream_vs_reference", "wer_offline_vs_reference"):
        assert 0 <= result[key] < 1, key

    one, two = result["streams"]
    for s in (one, two):
        for key in STREAM_KEYS:
            assert key in s, key
        assert s["rtf"] > 0 and math.isfinite(s["realtime_lag_p95_s"]) and s["realtime_lag_p95_s"] >= 0
        # a word's wall lag is the stream's own lag plus the delay of live decoding (never negative:
        # a final is reported after the audio it was made from arrived)
        assert 0 <= s["live_delay_median_s"] <= s["live_delay_p95_s"] <= s["live_delay_max_s"]
        assert s["realtime_lag_p95_s"] <= s["stream_lag_p95_s"] + s["live_delay_max_s"] + 0.002
        assert s["realtime_lag_median_s"] >= s["stream_lag_median_s"] - 0.002
        # and a word ends within the audio heard when it was committed, so no delay exceeds a lag
        assert s["live_delay_max_s"] <= s["realtime_lag_max_s"] + 0.002
    assert (one["streams"], two["streams"]) == (1, 2)
    assert (one["workers"], two["workers"]) == (1, 2) and two["threads_per_worker"] == 1   # one per thread
    assert two["staggered"] is True and len(two["worker_busy"]) == 2 and two["rtf"] == max(two["worker_busy"])
    assert one["calls"] == one["items"] and two["calls"] == two["items"]   # one stream per update: nothing batched
    assert one["updates"] >= 1 and two["updates"] >= 2 and two["end_delay_s"] >= 0
    assert result["max_realtime_streams"] in (0, 1, 2)


def test_bench_stream_via_server(whisper_base_int8_package, tmp_path, monkeypatch, capsys):
    """The concurrency test over TCP: each stream a connection to a StreamServer, its events read
    back from the socket."""
    from qasr_edge.cli import main

    monkeypatch.setenv("QASR_EDGE_HOME", str(tmp_path / "home"))
    code = main(["bench", "stream", "--model", str(whisper_base_int8_package), "--audio", str(FIXTURES / "long_en.wav"),
                 "--seconds", "6", "--threads", "2", "--streams", "2", "--stagger", "--via-server", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    (two,) = json.loads(out.out.strip().splitlines()[-1])["streams"]
    assert two["via"] == "server" and "over TCP" in out.err
    assert two["workers"] == 2 and two["updates"] >= 2 and two["calls"] == two["items"]
    assert math.isfinite(two["realtime_lag_p95_s"]) and two["realtime_lag_p95_s"] >= 0
    assert 0 <= two["wer_stream0_vs_single"] <= 0.5   # it said what the single stream said, give or take a word
