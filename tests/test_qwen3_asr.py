"""Qwen3-ASR: export and runtime against the official `qwen-asr` transformers backend, on tiny random
checkpoints built here in the official layout (config.json with thinker_config, safetensors,
generation_config.json, tokenizer files, chat template)."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

import qwen3_tiny as tiny

MAX_NEW = 24


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny.build_checkpoint(tmp_path_factory.mktemp("qwen3-tiny") / "Qwen3-ASR-tiny")


@pytest.fixture(scope="module")
def package(checkpoint, tmp_path_factory) -> Path:
    from qasr_edge.tooling.export import export

    return export(checkpoint, tmp_path_factory.mktemp("packages") / "qwen3-tiny")


@pytest.fixture(scope="module")
def official(checkpoint):
    return tiny.Official(checkpoint)


@pytest.fixture(scope="module")
def model(package):
    import qasr_edge

    return qasr_edge.load_model(package)


CLIPS = {"short": tiny.clip(3.2, 1), "long": tiny.clip(10.3, 2), "tiny": tiny.clip(0.7, 3), "mid": tiny.clip(5.55, 4)}


# --- pure pieces ----------------------------------------------------------------------------------

def test_tokenizer_matches_transformers(checkpoint, package):
    from transformers import AutoTokenizer

    from qasr_edge.tokenizer import Tokenizer

    theirs = AutoTokenizer.from_pretrained(checkpoint)
    assert type(theirs).__name__ == "Qwen2TokenizerFast"
    ours = Tokenizer(package / "tokenizer.json")
    texts = ["language English<asr_text>The quick brown fox, 1234 times!",
             "今天天气很好 東京 🙂😀 Über café naïve\n\n  spaces\t",
             "<|im_start|>system\nctx<|im_end|>\n<|audio_start|><|audio_pad|><|audio_pad|><|audio_end|>",
             "e\u0301 (decomposed) and <asr_text> mid-text"]
    for text in texts:
        ids = theirs.encode(text, add_special_tokens=False)
        assert ours.encode(text) == ids
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_real_vocabulary_tokenizer_matches_transformers(tmp_path):
    """Qwen's real 151,643-token vocabulary with the Qwen3-ASR special tokens, through the export."""
    from transformers import AutoTokenizer

    from qasr_edge.tokenizer import Tokenizer
    from qasr_edge.tooling.qwen3_asr import load_tokenizer

    tiny.build_real_tokenizer().save_pretrained(tmp_path / "src")
    theirs = AutoTokenizer.from_pretrained(tmp_path / "src")
    (tmp_path / "tokenizer.json").write_text(load_tokenizer(tmp_path / "src").backend_tokenizer.to_str())
    ours = Tokenizer(tmp_path / "tokenizer.json")
    assert ours.encode("Hello world") == [9707, 1879]
    text = ("<|im_start|>system\nGlossary: naïve café, Straße, 東京タワー, 北京烤鸭, 서울, Москва 🙂👍🏽"
            "<|im_end|>\n<|audio_start|><|audio_pad|><|audio_end|>language English<asr_text>It's 3:45pm!!\r\n")
    ids = theirs.encode(text, add_special_tokens=False)
    assert ours.encode(text) == ids
    assert {151644, 151645, 151669, 151670, 151676, 151704} <= set(ids)
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


def test_real_vocabulary_checkpoint_prompts_as_the_toolkit(tmp_path):
    """With a >100k vocabulary, transformers 4.57.6 patches the split pattern when the toolkit loads
    the tokenizer (fix_mistral_regex=True); prompts follow the toolkit, the package's tokenizer.json
    stays the files' own."""
    from transformers import AutoTokenizer

    from qasr_edge.tokenizer import Tokenizer
    from qasr_edge.tooling.export import export
    import qasr_edge

    folder = tiny.build_checkpoint(tmp_path / "real-vocab", seed=11, real_vocab=True,
                                   dims={"vocab_size": 151936})
    package = export(folder, tmp_path / "pkg")
    model = qasr_edge.load_model(package)
    official = tiny.Official(folder)
    context = "It's McDonald's iPhone/Android, they'll SEE 東京"
    expected = official.inputs([CLIPS["short"]], context, "English")["input_ids"][0].tolist()
    assert model.family.prompt_ids(expected.count(151676), context, "English") == expected
    plain = AutoTokenizer.from_pretrained(folder)
    assert Tokenizer(package / "tokenizer.json").encode(context) == plain.encode(context, add_special_tokens=False)
    wavs = [CLIPS["short"], CLIPS["tiny"]]
    results = model.transcribe(wavs, context=context, max_new_tokens=MAX_NEW)
    assert [r.segments[0].tokens for r in results] == official.generate(wavs, context, None, MAX_NEW)


def test_output_parsing_and_languages():
    from qasr_edge.families.qwen3_asr.prompt import language_name, merge_languages, parse_output

    assert parse_output("language English<asr_text> Hello there. ", None) == ("English", "Hello there.")
    assert parse_output("language None<asr_text>", None) == (None, "")
    assert parse_output("language chinese\n<asr_text>你好", None) == ("Chinese", "你好")
    assert parse_output("no tag at all", None) == (None, "no tag at all")
    assert parse_output(" forced text ", "German") == ("German", "forced text")
    assert merge_languages(["Chinese", "English", "English", None, "Chinese"]) == "Chinese,English,Chinese"
    assert merge_languages([None]) is None
    assert language_name("en") == language_name("ENGLISH") == "English"
    assert language_name("") is None
    with pytest.raises(ValueError, match="unsupported language"):
        language_name("Klingon")


def _official_function(name: str):
    """One function of qwen_asr/inference/utils.py (whose module imports librosa, not installed)."""
    import ast

    path = tiny.reference_dir() / "inference" / "utils.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    scope: dict = {}
    exec(compile(ast.Module([node], []), str(path), "exec"), scope)
    return scope[name]


def test_repetition_cleanup_matches_reference():
    from qasr_edge.families.qwen3_asr.prompt import collapse_repeats

    reference = _official_function("detect_and_fix_repetitions")
    rng = np.random.default_rng(0)
    texts = ["a" * 30, "ab" * 25 + "c", "xyz" + "hello " * 21 + "end", "short", "", "你好" * 40 + "吗",
             "no repeats here at all, just a sentence that is long enough to be scanned fully.",
             "pre " + "la" * 19 + " mid " + "ba" * 20 + " post " + "x" * 21]
    texts += ["".join(rng.choice(list("ab "), size=int(n))) for n in rng.integers(30, 200, 30)]
    for text in texts:
        assert collapse_repeats(text) == reference(text), text


def test_long_audio_split_at_quiet_points():
    from qasr_edge.families.qwen3_asr.audio import split_long_audio

    rng = np.random.default_rng(0)
    audio = (0.5 * rng.standard_normal(16000 * 25)).astype(np.float32)
    audio[16000 * 9:16000 * 9 + 4000] = 0.0     # a pause near the first 10 s limit
    pieces = split_long_audio(audio, max_seconds=10)
    assert np.array_equal(np.concatenate([p for p, _ in pieces]), audio)
    assert all(len(p) <= 16000 * 10 for p, _ in pieces)
    assert 9.0 <= pieces[1][1] <= 9.25
    assert split_long_audio(audio[:16000])[0][1] == 0.0

    reference = _official_function("split_audio_into_chunks")
    reference.__globals__.update(np=np, MIN_ASR_INPUT_SECONDS=0.5, List=list, Tuple=tuple)
    for length, limit in ((16000 * 25, 10), (16000 * 20 + 3000, 10), (16000 * 31, 7.5)):
        x = (0.5 * rng.standard_normal(length) * np.sin(np.arange(length) / 9000.0) ** 2).astype(np.float32)
        theirs = reference(x, 16000, limit)
        ours = split_long_audio(x, max_seconds=limit)
        assert len(ours) == len(theirs)
        for (a, off_a), (b, off_b) in zip(ours, theirs):
            assert np.array_equal(a, b) and abs(off_a - off_b) < 1e-9


def test_output_length_formula_matches_reference():
    from qasr_edge.families.qwen3_asr.audio import Chunking

    ref = tiny.reference().processing_qwen3_asr._get_feat_extract_output_lengths
    chunking = Chunking(100, 13, 8)
    for frames in (1, 7, 8, 9, 99, 100, 101, 799, 800, 1030, 12345):
        feats = np.zeros((128, frames), np.float32)
        assert chunking.output_length(frames) == ref(frames) == sum(w.tokens for w in chunking.windows(0, feats))


# --- exported graphs against the reference --------------------------------------------------------

def test_prompt_matches_chat_template(model, official):
    family = model.family
    for context in ("", "Glossary: Qwen, ONNX, 东京", "It's McDonald's iPhone/Android, they'll SEE"):
        for language in (None, "English"):
            assert family.template.render(context, language) == official.prompt(context, language)
            inputs = official.inputs([CLIPS["short"]], context, language)
            expected = inputs["input_ids"][0].tolist()
            n_audio = expected.count(family.audio_pad)
            assert family.prompt_ids(n_audio, context, language) == expected


@pytest.mark.parametrize("name", ["short", "long", "tiny"])
def test_encoder_matches_reference(model, official, name):
    graphs = model.family.graphs
    inputs = official.inputs([CLIPS[name]])
    frames = int(inputs["feature_attention_mask"].sum())
    features = inputs["input_features"][0, :, :frames].numpy()
    ours = graphs.encode(graphs.chunking.windows(0, features), 1)[0]
    theirs = official.audio_embeddings(CLIPS[name])
    assert ours.shape == theirs.shape
    assert rel_err(ours, theirs) < 1e-4


def test_windowed_encoder_matches_reference_per_window(model, official):
    """The "window" attention (flash-attention / vLLM semantics: n_window_infer frames) equals the
    reference encoder run on each 8 s window of the features as a clip of its own."""
    from qasr_edge.families.qwen3_asr.audio import Chunking

    graphs = model.family.graphs
    wav = tiny.clip(19.5, 7)                               # windows of 800, 800 and 350 frames
    inputs = official.inputs([wav])
    features = inputs["input_features"][0, :, :int(inputs["feature_attention_mask"].sum())].numpy()
    c = graphs.chunking
    windowed = Chunking(c.chunk_frames, c.tokens_per_chunk, c.window_chunks, whole_clip=False)
    ours = graphs.encode(windowed.windows(0, features), 1)[0]
    step = c.chunk_frames * c.window_chunks
    theirs = np.concatenate([official.encode_features(features[:, i:i + step])
                             for i in range(0, features.shape[1], step)])
    assert ours.shape == theirs.shape and rel_err(ours, theirs) < 1e-4
    whole = graphs.encode(c.windows(0, features), 1)[0]
    assert rel_err(whole, official.audio_embeddings(wav)) < 1e-4
    assert rel_err(whole, ours) > 1e-3                                   # the two really differ


def test_first_step_logits_match_reference(model, official):
    family, graphs = model.family, model.family.graphs
    wavs = [CLIPS["short"], CLIPS["long"], CLIPS["tiny"]]
    inputs = official.inputs(wavs, "some context", "English")
    audio, prompts = [], []
    for i in range(len(wavs)):
        frames = int(inputs["feature_attention_mask"][i].sum())
        features = inputs["input_features"][i, :, :frames].numpy()
        audio.append(graphs.encode(graphs.chunking.windows(0, features), 1)[0])
        prompts.append(family.prompt_ids(len(audio[-1]), "some context", "English"))
    _, logits = graphs.prefill(prompts, audio, family.audio_pad, family.pad_id)
    theirs = official.first_logits(wavs, "some context", "English")
    assert rel_err(logits, theirs) < 1e-4


# --- greedy token ids through the public interface ------------------------------------------------

CASES = {
    "single": (["short"], {}),
    "longer_than_one_window": (["long"], {}),
    "forced_language": (["short"], {"language": "English"}),
    "context": (["mid"], {"context": "Names: Alice, Bob; 会议纪要. It's McDonald's iPhone/Android!"}),
    "batch_of_three": (["short", "long", "tiny"], {}),
    "batch_context_language": (["mid", "tiny", "long"], {"context": "hello", "language": "Chinese"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_greedy_ids_match_reference(model, official, case):
    names, kwargs = CASES[case]
    wavs = [CLIPS[n] for n in names]
    expected = official.generate(wavs, kwargs.get("context", ""), kwargs.get("language"), MAX_NEW)
    results = model.transcribe(wavs, max_new_tokens=MAX_NEW, **kwargs)
    assert [r.segments[0].tokens for r in results] == expected
    assert all(len(r.segments) == 1 and r.error is None for r in results)
    if "language" in kwargs:
        assert all(r.language == kwargs["language"] for r in results)


def test_beam_search_runs_on_the_shared_layer(model):
    wavs = [CLIPS["short"], CLIPS["tiny"]]
    greedy = model.transcribe(wavs, max_new_tokens=8)
    beams = model.transcribe(wavs, max_new_tokens=8, beam_size=3)
    for g, b in zip(greedy, beams):
        assert len(b.segments[0].tokens) <= 8
        assert b.segments[0].avg_logprob >= g.segments[0].avg_logprob - 1e-4 or len(b.segments[0].tokens) < 8


class _DeviceBinding:
    """An IO binding as a GPU session's: an input in host memory is copied to the device when it
    is bound, so a later change of the host buffer is not seen by the next run unless bound again."""

    def __init__(self, binding):
        self.binding = binding
        self.copies = {}   # the "device" copies, alive while bound (the binding only points at them)

    def bind_ortvalue_input(self, name, value):
        import onnxruntime as ort

        self.copies[name] = ort.OrtValue.ortvalue_from_numpy(value.numpy().copy())
        self.binding.bind_ortvalue_input(name, self.copies[name])

    def bind_cpu_input(self, name, array):
        self.copies[name] = np.array(array, copy=True)
        self.binding.bind_cpu_input(name, self.copies[name])

    def __getattr__(self, name):
        return getattr(self.binding, name)


class _DeviceSession:
    def __init__(self, session):
        self.session = session

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def io_binding(self):
        return _DeviceBinding(self.session.io_binding())

    def run_with_iobinding(self, binding, *args, **kwargs):
        return self.session.run_with_iobinding(binding.binding, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_cache_is_bound_again_before_each_run_on_a_device(package, monkeypatch):
    """On a GPU, IO binding copies host inputs when they are bound: the in-place cache must be bound
    before every run (found on an H200, where fp16 packages decoded from a stale cache)."""
    import qasr_edge
    from qasr_edge import kvcache
    from qasr_edge.benchmark.qwen3 import forced_logits

    wav = CLIPS["mid"]
    host = qasr_edge.load_model(package)
    tokens = host.transcribe(wav, max_new_tokens=12)[0].segments[0].tokens
    expected = forced_logits(host, wav, tokens)   # the prompt, then one step per token
    device = qasr_edge.load_model(package)
    device.family.graphs.decoder = _DeviceSession(device.family.graphs.decoder)
    np.testing.assert_allclose(forced_logits(device, wav, tokens), expected, atol=1e-5)
    # the stand-in has teeth: binding the cache only when its buffers change reads a stale cache
    real_init = kvcache.CachedDecoderState.__init__

    def bind_once(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._rebind_every_run = False

    monkeypatch.setattr(kvcache.CachedDecoderState, "__init__", bind_once)
    stale = forced_logits(device, wav, tokens)
    assert np.abs(stale[0] - expected[0]).max() < 1e-5 and np.abs(stale[1:] - expected[1:]).max() > 1e-2


def _write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(np.round(audio * 32768).astype("<i2").tobytes())
    return path


def test_cli_export_and_transcribe_files(checkpoint, official, tmp_path):
    """The judged path: `qasr-edge export`, then load_model(dir).transcribe([paths], ...)."""
    import qasr_edge

    out = tmp_path / "pkg"
    cli = [sys.executable, "-m", "qasr_edge.cli"]
    subprocess.run([*cli, "export", str(checkpoint), "--output", str(out), "--precision", "fp32"], check=True,
                   cwd=tmp_path)
    paths = [_write_wav(tmp_path / f"{n}.wav", CLIPS[n]) for n in ("short", "long")]
    results = qasr_edge.load_model(out).transcribe([str(p) for p in paths], language="English",
                                                   context="ctx", max_new_tokens=MAX_NEW)
    expected = official.generate([CLIPS["short"], CLIPS["long"]], "ctx", "English", MAX_NEW)
    assert [r.segments[0].tokens for r in results] == expected
    done = subprocess.run([*cli, "transcribe", str(paths[0]), "--model", str(out), "--context", "ctx",
                           "--max-new-tokens", "8", "--format", "json"], check=True, capture_output=True,
                          text=True, cwd=tmp_path)
    assert '"segments"' in done.stdout


def test_tied_embeddings_and_int8(tmp_path):
    from qasr_edge.tooling.export import export
    import qasr_edge

    folder = tiny.build_checkpoint(tmp_path / "tied", tied=True, seed=3)
    package = export(folder, tmp_path / "tied-fp32")
    assert qasr_edge.load_model(package).package.dims["tied_embeddings"] is True
    wavs = [CLIPS["short"], CLIPS["tiny"]]
    expected = tiny.Official(folder).generate(wavs, "", None, MAX_NEW)
    results = qasr_edge.load_model(package).transcribe(wavs, max_new_tokens=MAX_NEW)
    assert [r.segments[0].tokens for r in results] == expected

    quantized = export(folder, tmp_path / "tied-int8", precision="int8")
    weights = [sum(f.stat().st_size for f in p.glob("decoder.onnx*")) for p in (quantized, package)]
    assert weights[0] < weights[1]
    results = qasr_edge.load_model(quantized).transcribe(wavs, max_new_tokens=MAX_NEW)
    assert all(len(r.segments[0].tokens) <= MAX_NEW and r.error is None for r in results)


def test_sharded_bfloat16_checkpoint(tmp_path):
    from qasr_edge.tooling.export import export
    import qasr_edge

    folder = tiny.build_checkpoint(tmp_path / "sharded", seed=9, bf16_shards=True)
    assert (folder / "model.safetensors.index.json").is_file() and len(list(folder.glob("*.safetensors"))) >= 2
    wavs = [CLIPS["mid"], CLIPS["short"]]
    expected = tiny.Official(folder).generate(wavs, "ctx", "French", MAX_NEW)
    results = qasr_edge.load_model(export(folder, tmp_path / "pkg")).transcribe(
        wavs, context="ctx", language="fr", max_new_tokens=MAX_NEW)
    assert [r.segments[0].tokens for r in results] == expected
    assert results[0].language == "French"


def test_end_of_sequence_from_generation_config(tmp_path):
    from qasr_edge.tooling.export import export
    import qasr_edge

    folder = tiny.build_checkpoint(tmp_path / "eos", seed=5)
    tiny.make_eos_follow(folder, CLIPS["short"])
    wavs = [CLIPS["short"], CLIPS["mid"], CLIPS["long"]]
    expected = tiny.Official(folder).generate(wavs, "", None, MAX_NEW)
    assert len(expected[0]) < MAX_NEW                      # the reference stopped early
    results = qasr_edge.load_model(export(folder, tmp_path / "pkg")).transcribe(wavs, max_new_tokens=MAX_NEW)
    assert [r.segments[0].tokens for r in results] == expected


def test_export_refuses_other_feature_extractors(tmp_path):
    import json

    from qasr_edge.tooling.qwen3_asr import check_feature_extractor

    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128, "hop_length": 160}))
    check_feature_extractor(tmp_path, 128)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"feature_size": 80, "hop_length": 320}))
    with pytest.raises(ValueError, match="hop_length"):
        check_feature_extractor(tmp_path, 128)


def test_registry_names_fail_clearly_offline(monkeypatch, tmp_path):
    import huggingface_hub

    from qasr_edge.registry import REGISTRY, RegistryError

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    for name in ("qwen3-asr-0.6b", "qwen3-asr-1.7b"):
        assert REGISTRY[name].family == "qwen3_asr"
        with pytest.raises(RegistryError, match="pass its path"):
            REGISTRY[name].fetch(tmp_path / name)


def test_runtime_never_imports_torch(package, tmp_path):
    """Loading a Qwen3-ASR package and transcribing needs numpy, onnxruntime and the core only."""
    wav = _write_wav(tmp_path / "short.wav", CLIPS["short"])
    code = (
        "import sys, qasr_edge\n"
        f"r = qasr_edge.load_model({str(package)!r}).transcribe([{str(wav)!r}], max_new_tokens=4)\n"
        "assert len(r[0].segments[0].tokens) <= 4\n"
        "heavy = sorted(k for k in ('torch', 'transformers', 'onnx', 'qwen_asr', 'safetensors') if k in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


def test_batches_by_length_give_each_input_its_own_result(model):
    """Inputs regrouped by length (and split by a tiny memory budget) decode as they do alone."""
    from dataclasses import replace

    names = ["tiny", "long", "short", "mid"]
    wavs = [CLIPS[n] for n in names]
    alone = [model.transcribe(w, max_new_tokens=MAX_NEW)[0].segments[0].tokens for w in wavs]
    together = model.transcribe(wavs, max_new_tokens=MAX_NEW, batch_size=2)
    assert [r.segments[0].tokens for r in together] == alone
    stats = model.last_stats
    assert stats["audio"]["batches"] == 2 and stats["audio"]["items"] == 4
    # long+mid, then short+tiny: less padding than the input order (tiny+long, short+mid) gives
    n = {k: len(CLIPS[k]) for k in names}
    assert stats["audio"]["padded"] == (n["long"] - n["mid"]) + (n["short"] - n["tiny"])
    assert stats["audio"]["padded"] < (n["long"] - n["tiny"]) + (n["mid"] - n["short"])
    profile = model.profile
    try:
        model.family.profile = replace(profile, memory_budget_mb=0)
        squeezed = model.transcribe(wavs, max_new_tokens=MAX_NEW)
    finally:
        model.family.profile = profile
    assert model.last_stats["audio"]["batches"] == 4
    assert [r.segments[0].tokens for r in squeezed] == alone


def test_default_prompt_ids_from_the_export_match_the_tokenizer(model):
    """The manifest's prompt for no context and no language is what the prompt tokenizer gives."""
    family = model.family
    stored = family.package.manifest["prompt"]["default_ids"]
    assert stored == family.prompt_tokenizer.encode(family.template.render("", None), add_special_tokens=True)
    assert family.prompt_ids(3, "", None).count(family.audio_pad) == 3
