"""How close was a greedy choice? Decoder logits after a given token prefix, on this machine.

    python bench/token_margin.py PACKAGE CLIP --language en --prefix 50364 17499 264 --candidates 11 293

For a clip shorter than 30 s (one window, decoded alone): encodes it, feeds the start-of-transcript
sequence and then the prefix (the tokens both machines agreed on) step by step, and prints the raw logits of the candidate
tokens and the top 3. Run it on both machines where their greedy tokens part
(bench/arm64_compare.py shows where) to see the margin each side decided by.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("package")
    p.add_argument("clip")
    p.add_argument("--language", required=True)
    p.add_argument("--profile", default=None)
    p.add_argument("--prefix", type=int, nargs="*", default=[], help="tokens after the start-of-transcript sequence")
    p.add_argument("--candidates", type=int, nargs="+", required=True)
    args = p.parse_args()

    from qasr_edge.audio import load_audio
    from qasr_edge.families.whisper import WhisperModel
    from qasr_edge.families.whisper.tokens import N_FRAMES
    from qasr_edge.features import log_mel_spectrogram
    from qasr_edge.package import read_package
    from qasr_edge.profiles import load_profile

    model = WhisperModel(read_package(args.package), load_profile(args.profile))
    features = log_mel_spectrogram(load_audio(args.clip), model.graphs.n_mels, padding=160)
    mel = np.zeros((model.graphs.n_mels, N_FRAMES), dtype=np.float32)   # the runtime's first window
    size = min(N_FRAMES, features.shape[1] - 1)
    mel[:, :size] = features[:, :size]
    cross_kv = model.graphs.encode(mel[None])
    # as the runtime does: the prompt in one call, then one decoder step per token (with dynamic
    # int8, the activation scale of a call covers all of its tokens, so feeding the prefix at once
    # would give other logits)
    state, logits = model.graphs.prefill(cross_kv, [model.tokens.sot_sequence(args.language, "transcribe")])
    row = logits[0, -1]
    for tok in args.prefix:
        row = state.step(np.array([tok]))[0]
    decode = model.tokenizer.decode
    for tok in args.candidates:
        print(f"token {tok:>6} {decode([tok])!r:<14} logit {row[tok]:9.4f}")
    top = np.argsort(row)[::-1][:3]
    print("top 3:", ", ".join(f"{t} {decode([int(t)])!r} {row[t]:.4f}" for t in top))
    a, b = args.candidates[:2]
    print(f"margin logit[{a}] - logit[{b}] = {row[a] - row[b]:+.4f}")


if __name__ == "__main__":
    main()
