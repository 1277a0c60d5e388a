"""Qwen3-ASR's audio side: features of a batch, the encoder's windows, long-audio splitting.

Features are Whisper's log-mel (128 bins) over each clip zero-padded to the longest clip of its
batch (the reference feature extractor pads a batch to its longest member, which touches the last
frames of the shorter clips), cut to ceil(samples / 160) frames (no more than the padded length
gives).

The encoder sees mel in chunks of `chunk_frames` (2 * n_window) frames; each chunk gives
`tokens_per_chunk` embeddings (a shorter last chunk fewer), and the chunks of one encoder row
attend to each other. A row is either a whole clip (what the official transformers backend
computes with its default "sdpa"/"eager" attention: its window mask only exists for
flash-attention) or an attention window of `window_chunks` chunks (n_window_infer frames, as
flash-attention and vLLM compute it, and what lets a stream encode new windows only). A clip
longer than `MAX_CLIP_CHUNKS` chunks always goes by windows: whole-clip attention over minutes of
audio needs gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...features import HOP_LENGTH, SAMPLE_RATE, log_mel_spectrogram

MAX_PIECE_SECONDS = 1200.0     # the official toolkit cuts long audio near 20 minutes...
SEARCH_SECONDS = 5.0           # ...at the quietest point within this distance of the cut
ENERGY_WINDOW_SECONDS = 0.1    # energy is summed over windows this long
MIN_PIECE_SECONDS = 0.5        # shorter pieces are zero-padded to this
MAX_CLIP_CHUNKS = 120          # whole-clip attention up to 120 s (1560 embeddings), windows beyond


def conv_tokens(frames: int) -> int:
    """Embeddings the three stride-2 convolutions make from `frames` mel frames."""
    for _ in range(3):
        frames = (frames - 1) // 2 + 1 if frames > 0 else 0
    return frames


def batch_features(audios: list[np.ndarray], n_mels: int, pad_to: list[int] | None = None) -> list[np.ndarray]:
    """Log-mel [n_mels, ceil(samples / 160)] of each clip zero-padded to its `pad_to` samples
    (default: the longest clip's)."""
    if pad_to is None:
        pad_to = [max(len(a) for a in audios)] * len(audios)
    feats = []
    for audio, longest in zip(audios, pad_to):
        mel = log_mel_spectrogram(np.pad(audio, (0, max(0, longest - len(audio)))), n_mels)
        feats.append(mel[:, :min(-(-len(audio) // HOP_LENGTH), mel.shape[1])])
    return feats


@dataclass(frozen=True)
class Window:
    clip: int                  # index of the clip in the batch
    mel: np.ndarray            # [chunks, n_mels, chunk_frames] (the last chunk zero-padded)
    tokens: int                # valid embeddings this window gives


@dataclass(frozen=True)
class Chunking:
    chunk_frames: int
    tokens_per_chunk: int
    window_chunks: int
    whole_clip: bool = True    # one row per clip (up to MAX_CLIP_CHUNKS) instead of one per window

    def output_length(self, frames: int) -> int:
        full, tail = divmod(frames, self.chunk_frames)
        return full * self.tokens_per_chunk + conv_tokens(tail)

    def windows(self, clip: int, features: np.ndarray) -> list[Window]:
        n_mels, frames = features.shape
        if frames == 0:
            return []
        size = min(frames, self.chunk_frames)   # a clip shorter than one chunk is not padded
        n_chunks = -(-frames // size)
        padded = np.zeros((n_mels, n_chunks * size), dtype=np.float32)
        padded[:, :frames] = features
        chunks = padded.reshape(n_mels, n_chunks, size).transpose(1, 0, 2)
        step = n_chunks if self.whole_clip and n_chunks <= MAX_CLIP_CHUNKS else self.window_chunks
        out = []
        for start in range(0, n_chunks, step):
            stop = min(start + step, n_chunks)
            valid = min(frames, stop * size) - start * size
            full, tail = divmod(valid, size)
            tokens = full * conv_tokens(size) + conv_tokens(tail)
            out.append(Window(clip, np.ascontiguousarray(chunks[start:stop]), tokens))
        return out


def split_long_audio(audio: np.ndarray, max_seconds: float = MAX_PIECE_SECONDS) -> list[tuple[np.ndarray, float]]:
    """(piece, offset seconds) pieces no longer than `max_seconds`, cut at the quietest sample
    near each limit; together they are the whole input, in order."""
    limit = int(max_seconds * SAMPLE_RATE)
    if len(audio) <= limit:
        return [(audio, 0.0)]
    reach, win = int(SEARCH_SECONDS * SAMPLE_RATE), max(4, int(ENERGY_WINDOW_SECONDS * SAMPLE_RATE))
    pieces, start = [], 0
    while len(audio) - start > limit:
        cut = start + limit
        lo, hi = max(start, cut - reach), min(len(audio), cut + reach)
        if hi - lo > win:
            level = np.abs(audio[lo:hi])
            sums = np.convolve(level, np.ones(win, dtype=np.float32), mode="valid")
            quiet = int(np.argmin(sums))
            cut = lo + quiet + int(np.argmin(level[quiet:quiet + win]))
        cut = min(max(cut, start + 1), len(audio))
        pieces.append((audio[start:cut], start / SAMPLE_RATE))
        start = cut
    pieces.append((audio[start:], start / SAMPLE_RATE))
    shortest = int(MIN_PIECE_SECONDS * SAMPLE_RATE)
    return [(np.pad(p, (0, max(0, shortest - len(p)))), off) for p, off in pieces]
