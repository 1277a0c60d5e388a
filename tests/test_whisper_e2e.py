"""Layer 3: whisper-base end to end on committed fixture clips, through the Python API and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jiwer
import numpy as np
import pytest

import qasr_edge

FIXTURES = Path(__file__).parent / "fixtures"
CLIPS = json.loads((FIXTURES / "fixtures.json").read_text())


def normalise(text: str) -> str:
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


def wer(ref: str, hyp: str) -> float:
    return jiwer.wer(normalise(ref), normalise(hyp)) if normalise(hyp) else 1.0


@pytest.fixture(scope="module")
def model(whisper_base_package):
    return qasr_edge.load_model(whisper_base_package, threads=2)


@pytest.fixture(scope="module")
def beam5(model):
    """Every fixture clip transcribed in one call (beam 5), keyed by file name."""
    files = [FIXTURES / c["file"] for c in CLIPS["clips"]] + [FIXTURES / CLIPS["long"]["file"]]
    return {Path(t.audio).name: t for t in model.transcribe([str(f) for f in files], beam_size=5)}


def test_english_clips_are_accurate(beam5):
    for clip in CLIPS["clips"]:
        if clip["lang"] == "en":
            t = beam5[clip["file"]]
            assert t.language == "en" and t.language_probability > 0.5
            assert wer(clip["text"], t.text) <= 0.16, (clip["file"], t.text)  # one word in a short clip


def test_short_windows_encode_less_and_keep_the_text(model, beam5, monkeypatch):
    """short_windows: clips of a few seconds are encoded in 10-15 s windows, not 30 s ones; the
    English clips keep their accuracy, and a window of a long file stays 30 s."""
    graphs = model.family.graphs
    seen = []
    encode = graphs.encode
    monkeypatch.setattr(graphs, "encode", lambda mel, *a: seen.append(mel.shape[2]) or encode(mel, *a))
    english = [c for c in CLIPS["clips"] if c["lang"] == "en"]
    got = model.transcribe([str(FIXTURES / c["file"]) for c in english], short_windows=True)
    assert seen and all(f in (1000, 1500) for f in seen) and model.last_stats["audio"]["padding_fraction"] < 0.7
    for clip, t in zip(english, got):
        assert t.language == "en" and wer(clip["text"], t.text) <= 0.16, (clip["file"], t.text)
        assert wer(beam5[clip["file"]].text, t.text) <= 0.16
    seen.clear()
    long = model.transcribe(str(FIXTURES / CLIPS["long"]["file"]), short_windows=True)[0]
    assert seen[0] == 3000 and wer(beam5[CLIPS["long"]["file"]].text, long.text) <= 0.08


def test_inputs_over_the_profiles_audio_bound_are_transcribed_a_group_at_a_time(whisper_base_package, beam5):
    """A profile's max_audio_s bounds the decoded audio one call holds: 10 s here, so the clips go
    in several groups (the 57 s file alone); one Transcript per input, in order, a broken input
    reported where it was, progress rising to 1 across the groups, padding stats summed."""
    import dataclasses

    from qasr_edge.model import Model
    from qasr_edge.profiles import load_profile

    profile = dataclasses.replace(load_profile("cpu").with_threads(2), max_audio_s=10.0)
    model = Model(whisper_base_package, profile)
    english = [str(FIXTURES / c["file"]) for c in CLIPS["clips"] if c["lang"] == "en"]
    files = [english[0], str(FIXTURES / "missing.wav"), str(FIXTURES / CLIPS["long"]["file"]), english[1]]
    groups, seen = [], []
    transcribe = model.family.transcribe
    model.family.transcribe = lambda waves, *a, **k: groups.append(len(waves)) or transcribe(waves, *a, **k)
    got = model.transcribe(files, beam_size=5, progress=seen.append)
    assert groups == [1, 1, 1] and [t.audio for t in got] == files
    assert got[1].error and "no such file" in got[1].error and not got[1].text
    for f, t in zip(files, got):
        if f != files[1]:
            assert wer(beam5[Path(f).name].text, t.text) <= 0.08, (f, t.text)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and seen[0] <= 0.5   # the 1st group: 2 of 4
    assert model.last_stats["audio"]["items"] >= 3


def test_pieces_give_the_spans_of_the_array_and_let_go_of_the_past():
    from qasr_edge.families.whisper import _Pieces

    array = np.arange(2 * 10).reshape(2, 10)
    pieces = _Pieces(array, 4)
    assert pieces.length == 10
    for start, stop in [(0, 4), (0, 10), (3, 5), (4, 8), (5, 6), (7, 10), (1, 9), (4, 4), (10, 10), (7, 13),
                        (11, 14)]:
        np.testing.assert_array_equal(pieces.span(start, stop), array[:, start:stop])
    pieces.release_before(9)           # pieces [0, 4) and [4, 8) go; [8, 10) stays
    np.testing.assert_array_equal(pieces.span(8, 10), array[:, 8:10])
    with pytest.raises(TypeError):
        pieces.span(7, 10)             # let go of


def test_the_family_lets_go_of_the_samples_it_is_handed(model):
    """A job keeps the log-mel (and a float16 copy for the voice-activity gate), not the float32
    samples: the family empties the list it is handed, and the text is the same."""
    from qasr_edge.audio import load_audio
    from qasr_edge.options import TranscribeOptions

    wave = load_audio(str(FIXTURES / CLIPS["long"]["file"]))
    waves = [wave.copy()]

    got = model.family.transcribe(waves, TranscribeOptions(beam_size=5))
    assert waves == [None]
    assert got[0].text == model.transcribe(wave, beam_size=5)[0].text and got[0].duration == len(wave) / 16000


def test_a_silent_stretch_after_speech_is_gated_across_pieces(model, monkeypatch):
    """57 s of speech, then 45 s of digital silence: the windows after the speech start inside a
    30 s piece of the kept audio, the gate (on those spans) drops them, and the text is the
    speech's alone."""
    from qasr_edge.audio import load_audio

    speech = load_audio(str(FIXTURES / CLIPS["long"]["file"]))
    audio = np.concatenate([speech, np.zeros(45 * 16000, np.float32)])
    alone = model.transcribe(speech, beam_size=5)[0].text
    family = model.family
    hears_nothing = family._vad_hears_nothing

    def spy(job, *rest):
        silent = hears_nothing(job, *rest)
        if silent:
            gated.append(job.seek)
        return silent

    gated: list[int] = []
    monkeypatch.setattr(family, "_vad_hears_nothing", spy)
    got = model.transcribe(audio, beam_size=5)[0]
    assert got.text == alone and got.duration == pytest.approx(len(audio) / 16000)
    assert any(seek % 3000 for seek in gated), gated   # a window starting inside a piece was dropped


def test_languages_detected(beam5):
    detected = {c["file"]: beam5[c["file"]].language for c in CLIPS["clips"]}
    for name in ("en_flite.wav", "en_weather.wav", "es.wav", "fr.wav"):
        assert detected[name] == name[:2], detected


def test_long_audio_is_windowed_with_monotonic_timestamps(beam5):
    t = beam5[CLIPS["long"]["file"]]
    reference = " ".join(CLIPS["long"]["sentences"])
    assert wer(reference, t.text) <= 0.08, t.text
    assert len(t.segments) >= 6
    starts = [s.start for s in t.segments]
    assert starts == sorted(starts)
    assert all(s.start < s.end for s in t.segments)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(t.segments, t.segments[1:]))
    assert t.segments[-1].end <= t.duration + 0.5 and t.segments[-1].end > t.duration - 5
    assert all(s.tokens and all(isinstance(i, int) for i in s.tokens) for s in t.segments)


def test_speech_chunks_decoded_in_parallel(model, beam5):
    """chunking="vad": the long clip plus a silent pause, cut at silences into <= 30 s chunks that
    share batches; accurate, monotonic, and in the input's time frame."""
    from qasr_edge.audio import load_audio

    speech = load_audio(FIXTURES / CLIPS["long"]["file"])
    audio = np.concatenate([np.zeros(16000 * 3, np.float32), speech])
    t = model.transcribe(audio, beam_size=5, chunking="vad")[0]
    reference = " ".join(CLIPS["long"]["sentences"])
    assert wer(reference, t.text) <= 0.08, t.text
    assert wer(beam5[CLIPS["long"]["file"]].text, t.text) <= 0.08
    assert t.language == "en" and model.last_stats["audio"]["items"] >= 2
    assert t.segments[0].start >= 2.5 and t.segments[-1].end <= t.duration + 0.5
    assert all(a.start <= b.start and a.end <= b.start + 1e-6 for a, b in zip(t.segments, t.segments[1:]))
    assert [s.id for s in t.segments] == list(range(len(t.segments)))
    assert model.transcribe(np.zeros(16000 * 5, np.float32), chunking="vad")[0].text == ""


def test_silence_and_noise_give_empty_text(model):
    rng = np.random.default_rng(0)
    silence = np.zeros(16000 * 5, dtype=np.float32)
    white = (0.05 * rng.standard_normal(16000 * 8)).astype(np.float32)
    brown = np.cumsum(rng.standard_normal(16000 * 6)).astype(np.float32)
    brown = 0.2 * brown / np.abs(brown).max()
    for t in model.transcribe([silence, white, brown], beam_size=5):
        assert t.text == "" and t.segments == [], t.text


def test_forced_language_and_translate(model):
    clip = FIXTURES / "fr.wav"
    forced = model.transcribe(str(clip), language="fr", beam_size=1)[0]
    assert forced.language == "fr" and forced.language_probability == 1.0
    assert "bonjour" in normalise(forced.text)
    english = model.transcribe(str(clip), language="fr", task="translate", beam_size=1)[0]
    assert english.text and normalise(english.text) != normalise(forced.text)
    with pytest.raises(ValueError, match="unknown language"):
        model.transcribe(str(clip), language="xx")


def test_beam_and_greedy_agree_on_clean_speech(model):
    clip = str(FIXTURES / "en_flite.wav")
    greedy = model.transcribe(clip, beam_size=1)[0]
    beam = model.transcribe(clip, beam_size=5)[0]
    assert normalise(greedy.text) == normalise(beam.text)
    seg = beam.segments[0]
    assert len(seg.token_logprobs) == len(seg.tokens) and -1.0 < seg.avg_logprob <= 0.0


def test_numpy_input_and_max_new_tokens(model):
    from qasr_edge.audio import load_audio

    audio = load_audio(FIXTURES / "en_weather.wav")
    full = model.transcribe(audio, beam_size=1)[0]
    short = model.transcribe(audio, beam_size=1, max_new_tokens=4, without_timestamps=True)[0]
    assert full.audio is None and len(full.text.split()) > 8
    assert sum(len(s.tokens) for s in short.segments) <= 4


def test_a_window_samples_at_most_half_the_text_context(model, monkeypatch):
    """As Whisper's reference decoder: at most n_text_ctx // 2 new tokens per window unless asked
    (a short clip's loop was decoded to 445 tokens at every temperature of the fallback)."""
    import qasr_edge.families.whisper as family
    from qasr_edge.audio import load_audio

    caps = []
    decode = family.decode_with_fallback
    monkeypatch.setattr(family, "decode_with_fallback",
                        lambda prefill, n, search, *a, **k: caps.append(search.max_new_tokens) or decode(prefill, n, search, *a, **k))
    audio = load_audio(FIXTURES / "en_weather.wav")
    model.transcribe(audio, beam_size=1)
    model.transcribe(audio, beam_size=1, max_new_tokens=300)
    n_text_ctx = model.family.graphs.n_text_ctx
    assert caps == [n_text_ctx // 2, 300] and n_text_ctx // 2 < 300


def test_beam_search_gives_the_same_text_without_the_shared_prompt_shortcut(model, monkeypatch):
    """Reordering beams copies only the positions after a group's prompt, windows that stay in
    a run of the batch keep their cross-attention keys in place, and finished windows leave the
    batch's own copy in place; none of it changes a token."""
    import qasr_edge.families.whisper.graphs as graphs
    from qasr_edge.kvcache import KVCache

    files = [str(FIXTURES / c["file"]) for c in CLIPS["clips"][:4]]
    fast = [t.text for t in model.transcribe(files, beam_size=5)]
    select = KVCache.select
    monkeypatch.setattr(KVCache, "select", lambda self, rows, same_prefix=None: select(self, rows))
    import qasr_edge.families.whisper as family

    copy = lambda kv, w: np.take(kv, np.asarray(w), axis=2)   # noqa: E731
    monkeypatch.setattr(graphs, "take_windows", copy)
    monkeypatch.setattr(graphs, "compact_windows", copy)
    monkeypatch.setattr(family, "take_windows", copy)
    assert [t.text for t in model.transcribe(files, beam_size=5)] == fast


def test_same_tokens_as_faster_whisper_greedy(whisper_base_ct2, model):
    """Greedy decoding at temperature 0 on the same weights gives faster-whisper's tokens."""
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(whisper_base_ct2), device="cpu", compute_type="float32", cpu_threads=2)
    files = [FIXTURES / c["file"] for c in CLIPS["clips"]] + [FIXTURES / CLIPS["long"]["file"]]
    ours = model.transcribe([str(f) for f in files], beam_size=1, temperatures=(0.0,))
    same, diffs = 0, []
    for f, t in zip(files, ours):
        segments, _ = fw.transcribe(str(f), beam_size=1, temperature=0.0)
        theirs = [tok for s in segments for tok in s.tokens]
        mine = [tok for s in t.segments for tok in s.tokens]
        same += theirs == mine
        if theirs != mine:
            diffs.append(f.name)
    assert same >= len(files) - 2, diffs


# ----------------------------------------------------------------------------------------------
# The command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # Run outside the checkout, so that the installed package (with its compiled core) is imported.
    return subprocess.run([sys.executable, "-m", "qasr_edge.cli", *args], capture_output=True, text=True,
                          timeout=600, cwd=tempfile.gettempdir())


def test_cli_batch_with_broken_files(whisper_base_package, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes((FIXTURES / "en_flite.wav").read_bytes()[:1000])
    good = FIXTURES / "en_flite.wav"
    inputs = [str(good), str(tmp_path / "missing.wav"), str(empty), str(text), str(truncated), str(tmp_path),
              str(FIXTURES / "en_weather.wav")]
    proc = run_cli("transcribe", *inputs, "--model", str(whisper_base_package), "--format", "jsonl",
                   "--beam-size", "5", "--threads", "2")
    assert proc.returncode != 0
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["audio"] for r in rows] == inputs
    assert set(rows[0]) >= {"audio", "text", "language", "duration", "segments"}
    assert wer(CLIPS["clips"][0]["text"], rows[0]["text"]) <= 0.16
    assert wer(CLIPS["clips"][1]["text"], rows[-1]["text"]) <= 0.1
    assert all("error" in r for r in rows[1:-1]) and "error" not in rows[0]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("qasr-edge: error:")]
    assert len(errors) == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    for path, line in zip(inputs[1:-1], errors):
        assert Path(path).name in line


def test_cli_formats_to_output_dir(whisper_base_package, tmp_path):
    clip = FIXTURES / "en_flite.wav"
    for fmt in ("txt", "json", "srt", "vtt", "tsv"):
        proc = run_cli("transcribe", str(clip), "--model", str(whisper_base_package), "--format", fmt,
                       "--output-dir", str(tmp_path), "--beam-size", "1")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / f"en_flite.{fmt}").read_text().strip()
    assert "-->" in (tmp_path / "en_flite.srt").read_text()
    assert json.loads((tmp_path / "en_flite.json").read_text())["language"] == "en"


def test_cli_txt_to_stdout_and_unknown_model(whisper_base_package):
    proc = run_cli("transcribe", str(FIXTURES / "en_flite.wav"), "--model", str(whisper_base_package), "-b", "1")
    assert proc.returncode == 0 and "quick brown fox" in proc.stdout.lower()
    bad = run_cli("transcribe", str(FIXTURES / "en_flite.wav"), "--model", "no-such-model")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown model" in bad.stderr


def test_transcription_never_imports_torch(whisper_base_package):
    code = (
        "import sys, qasr_edge\n"
        f"m = qasr_edge.load_model({str(whisper_base_package)!r})\n"
        f"r = m.transcribe({str(FIXTURES / 'en_flite.wav')!r}, beam_size=1)\n"
        "assert 'fox' in r[0].text.lower(), r[0].text\n"
        "heavy = sorted(k for k in ('torch', 'transformers', 'onnx', 'optimum', 'ctranslate2') if k in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_vad_gate_is_what_silences_hallucinations(whisper_base_ct2, model):
    """Without the gate, beam search on digital silence hallucinates exactly as faster-whisper does;
    with it (the default), the window is dropped."""
    from faster_whisper import WhisperModel

    silence = np.zeros(16000 * 5, dtype=np.float32)
    fw = WhisperModel(str(whisper_base_ct2), device="cpu", compute_type="float32", cpu_threads=2)
    theirs = "".join(s.text for s in fw.transcribe(silence, beam_size=5)[0]).strip()
    ungated = model.transcribe(silence, beam_size=5, vad_gate=None)[0]
    assert ungated.text == theirs
    assert model.transcribe(silence, beam_size=5)[0].text == ""


def test_speech_detector(whisper_base_package):
    from qasr_edge.audio import load_audio
    from qasr_edge.package import read_package
    from qasr_edge.profiles import load_profile
    from qasr_edge.vad import SpeechDetector

    vad = SpeechDetector.from_package(read_package(whisper_base_package), load_profile())
    speech = load_audio(FIXTURES / "en_flite.wav")
    noise = (0.05 * np.random.default_rng(3).standard_normal(16000 * 4)).astype(np.float32)
    assert vad.probabilities(speech).shape == (-(-len(speech) // 512),)
    assert vad.speech_seconds(speech) > 2.5
    assert vad.speech_seconds(np.zeros(16000, np.float32)) == 0.0
    assert vad.speech_seconds(noise) < 0.25


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    import wave

    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1 if audio.ndim == 1 else audio.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def test_cli_decodes_every_format(whisper_base_package, tmp_path):
    """The same sentence as mp3, ogg, opus, flac, m4a, a video's audio track, 44.1 kHz stereo and 8 kHz WAV."""
    from scipy.signal import resample_poly

    from qasr_edge.audio import load_audio

    speech = load_audio(FIXTURES / "en_weather.wav")
    stereo = resample_poly(speech, 441, 160)
    wavs = [write_wav(tmp_path / "weather_44k_stereo.wav", np.stack([stereo, 0.5 * stereo], axis=1), 44100),
            write_wav(tmp_path / "weather_8k.wav", resample_poly(speech, 1, 2), 8000)]
    inputs = sorted((FIXTURES / "formats" / "whole").iterdir()) + wavs
    assert len(inputs) == 8
    proc = run_cli("transcribe", *map(str, inputs), "--model", str(whisper_base_package), "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    reference = CLIPS["clips"][1]["text"]
    for path, row in zip(inputs, rows):
        assert row["language"] == "en" and abs(row["duration"] - len(speech) / 16000) < 0.1, path.name
        assert wer(reference, row["text"]) <= 0.16, (path.name, row["text"])


def test_cli_models_and_profiles(tmp_path):
    env_home = {"QASR_EDGE_HOME": str(tmp_path)}
    import os

    proc = subprocess.run([sys.executable, "-m", "qasr_edge.cli", "models", "list", "--json"], capture_output=True,
                          text=True, cwd=tempfile.gettempdir(), env={**os.environ, **env_home}, timeout=60)
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    assert any(r["name"] == "whisper-base" and r["path"] is None for r in rows)  # known, not built yet
    prof = run_cli("profiles")
    assert prof.returncode == 0
    listed = {line.split()[0]: line.split()[1] for line in prof.stdout.splitlines() if not line.startswith(" ")}
    assert {"cpu", "x86-64-avx2", "x86-64-avx512", "arm64", "jetson-gpu", "cuda-gpu", "mobile"} <= set(listed)
    assert listed["cpu"] == "yes"   # usable here; each profile's second line says on what, or why not
