"""Whisper's logit filters, applied by the shared search layer before each step's choice."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .tokens import WhisperTokens

NEG_INF = -np.inf


class SuppressTokens:
    def __init__(self, ids: Sequence[int]):
        self.ids = np.array(sorted(set(ids)), dtype=np.int64)

    def __call__(self, logits: np.ndarray, generated: Sequence[Sequence[int]]) -> None:
        if self.ids.size:
            logits[:, self.ids] = NEG_INF


class SuppressAtStart:
    """No blank (a bare space) and no end-of-text as the first generated token."""

    def __init__(self, ids: Sequence[int]):
        self.ids = np.array(sorted(set(ids)), dtype=np.int64)

    def __call__(self, logits: np.ndarray, generated: Sequence[Sequence[int]]) -> None:
        for row, seq in enumerate(generated):
            if not seq:
                logits[row, self.ids] = NEG_INF


class TimestampRules:
    """Timestamps come in pairs (a lone one only right before end-of-text), never decrease, the
    first token is a timestamp no later than `max_initial_index`, and a timestamp is forced when
    timestamps together are more likely than any single text token. With `min_final_index`, the
    text ends only after a timestamp at least that late."""

    def __init__(self, tokens: WhisperTokens, max_initial_index: int | None, min_final_index: int | None = None):
        self.t = tokens
        self.max_initial_index = max_initial_index
        self.min_final_index = min_final_index

    def __call__(self, logits: np.ndarray, generated: Sequence[Sequence[int]]) -> None:
        ts0, eot = self.t.timestamp_begin, self.t.eot
        logits[:, self.t.no_timestamps] = NEG_INF
        for row, seq in enumerate(generated):
            last_ts = len(seq) >= 1 and seq[-1] >= ts0
            penultimate_ts = len(seq) < 2 or seq[-2] >= ts0
            if last_ts:
                if penultimate_ts:
                    logits[row, ts0:] = NEG_INF        # a pair just closed: text must follow
                else:
                    logits[row, :eot] = NEG_INF        # an open timestamp: close it or end
            stamps = [tok for tok in seq if tok >= ts0]
            if stamps:
                floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
                logits[row, ts0:floor] = NEG_INF
            if not seq:                                 # the first token is a timestamp...
                logits[row, :ts0] = NEG_INF
                if self.max_initial_index is not None:  # ...and not a late one
                    logits[row, ts0 + self.max_initial_index + 1:] = NEG_INF
            elif self.min_final_index is not None and (not stamps or stamps[-1] < ts0 + self.min_final_index):
                logits[row, eot] = NEG_INF              # the text may not end this early
        # timestamps together against the likeliest text token: both sides of a row share its
        # softmax normaliser, so logits compare as log-probabilities do
        stamps = logits[:, ts0:]
        top = np.max(stamps, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):   # rows with every timestamp barred
            mass = top[:, 0] + np.log(np.sum(np.exp(stamps - top), axis=-1))
        force = np.isfinite(top[:, 0]) & (mass > np.max(logits[:, :ts0], axis=-1))
        logits[force, :ts0] = NEG_INF
