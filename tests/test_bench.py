"""`qasr-edge bench`: the command runs each side, and its last line is the documented JSON object.

Timings are never asserted (a benchmark is not a test); only that the work was done and reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
KEYS = ("wall_s", "audio_s", "load_s", "peak_rss_mb", "audio_s_per_wall_s", "ms_per_step", "tokens")
PEER_KEYS = ("peer_wall_s", "peer_load_s", "peer_peak_rss_mb", "peer")


def bench(home: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "bench", *args, "--json"], capture_output=True,
                          text=True, env={**__import__("os").environ, "QASR_EDGE_HOME": str(home)}, cwd=home)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-home")


def test_qwen3_tiny_with_the_official_peer(home):
    result = bench(home, "qwen3", "--size", "tiny", "--batch", "2", "--seconds", "2", "--new-tokens", "5",
                   "--precision", "fp32", "--threads", "1")
    for key in KEYS + PEER_KEYS:
        assert key in result, key
    assert result["tokens"] == result["peer_tokens"] == 2 * 5
    assert result["decoder_steps"] >= 4 and result["ms_per_step"] > 0
    assert result["peer"]["name"] == "qwen-asr" and result["peer_ms_per_step"] > 0
    assert result["audio_s"] == pytest.approx(4.0) and result["peak_rss_mb"] > 0


def test_qwen3_tiny_without_peer_reuses_the_cached_package(home):
    result = bench(home, "qwen3", "--size", "tiny", "--batch", "1", "--seconds", "1", "--new-tokens", "3",
                   "--precision", "fp32", "--no-peer", "--repeat", "2")
    assert result["tokens"] == 3 and len(result["runs_wall_s"]) == 2
    assert "peer_wall_s" not in result and result["peers"] == []
    assert sorted(p.name for p in (home / "bench").iterdir()) == ["qwen3-asr-tiny-random", "qwen3-asr-tiny-random-fp32"]


def test_whisper_no_peer_and_faster_whisper_peers(home, whisper_base_int8_package, whisper_base_ct2):
    clip = str(FIXTURES / "en_flite.wav")
    alone = bench(home, "whisper", "--model", str(whisper_base_int8_package), "--audio", clip,
                  "--beam-size", "1", "--threads", "1", "--no-peer")
    for key in KEYS:
        assert key in alone, key
    assert alone["tokens"] > 0 and alone["decoder_steps"] > 0 and "peer" not in alone

    both = bench(home, "whisper", "--model", str(whisper_base_int8_package), "--peer-checkpoint",
                 str(whisper_base_ct2), "--audio", clip, "--beam-size", "1", "--threads", "1")
    for key in KEYS + PEER_KEYS:
        assert key in both, key
    modes = [p["side"] for p in both["peers"]]
    assert modes == ["faster-whisper sequential", "faster-whisper batched"]
    assert all(p["tokens"] > 0 and "int8" in p["peer"]["mode"] for p in both["peers"])
    assert both["peers"][0]["word_difference"] is not None


def test_bench_rejects_bad_input(home, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    done = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "bench", "whisper", "--audio", str(text),
                           "--no-peer"], capture_output=True, text=True, cwd=home)
    assert done.returncode == 2 and "WAV" in done.stderr
