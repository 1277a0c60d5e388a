"""The one search layer: greedy, beam and sampling search over logits as numpy arrays, plus the
temperature-fallback loop. Family adapters supply a `DecoderState` (which owns the key-value cache)
and logit filters; nothing in here knows about Whisper or Qwen3-ASR.

Rows and groups: a group is one input (one audio window, one prompt); a group owns `width` rows
(its beams or samples), stored contiguously, row = group * width + j. Decoder states rely on this to
share per-group data (for example Whisper's cross-attention keys) between a group's rows.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

class DecoderState(Protocol):
    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row (int64 [rows]); return next-token logits (float32 [rows, vocab])."""

    def select(self, rows: np.ndarray, groups: np.ndarray) -> None:
        """Keep (and duplicate) `rows` of the current rows, belonging to the kept `groups` in order;
        len(rows) is len(groups) * width."""


# A logit filter edits logits [rows, vocab] in place, given the tokens each row generated so far.
LogitFilter = Callable[[np.ndarray, Sequence[Sequence[int]]], None]


@dataclass(frozen=True)
class SearchOptions:
    beam_size: int = 1            # 1 = greedy at temperature 0
    best_of: int = 1              # samples per input at temperature > 0
    patience: float = 1.0         # beam search stops after round(beam_size * patience) finished hypotheses
    length_penalty: float = 1.0   # hypotheses ranked by sum_logprob / length ** length_penalty
    temperature: float = 0.0
    max_new_tokens: int = 224
    min_new_tokens: int = 0       # end-of-sequence is barred before this many tokens (benchmarks: exactly N)
    eos: tuple[int, ...] = ()
    n_best: int = 1               # hypotheses returned per input (beam search gives up to beam_size)
    stop_loops: bool = False      # a hypothesis that ends in a loop (`ends_in_loop`) stops there, `looped`

    def __post_init__(self):
        if not 1 <= self.beam_size <= 16:
            raise ValueError(f"beam_size must be in 1..16, got {self.beam_size}")
        if self.best_of < 1 or self.patience <= 0 or self.temperature < 0 or self.max_new_tokens < 0:
            raise ValueError("best_of >= 1, patience > 0, temperature >= 0 and max_new_tokens >= 0 required")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens")
        if not self.eos:
            raise ValueError("SearchOptions needs at least one end-of-sequence id")

    @property
    def width(self) -> int:
        if self.temperature > 0:
            return self.best_of
        return self.beam_size


@dataclass
class Hypothesis:
    tokens: list[int]              # generated ids, end-of-sequence excluded
    token_logprobs: list[float]    # one per generated id, plus the end-of-sequence's when finished
    sum_logprob: float
    finished: bool                 # ended with end-of-sequence (not cut by max_new_tokens)
    looped: bool = False           # stopped in a loop (SearchOptions.stop_loops)

    def score(self, length_penalty: float = 1.0) -> float:
        return self.sum_logprob / (max(len(self.tokens), 1) ** length_penalty)

    @property
    def avg_logprob(self) -> float:
        """Per generated token, end-of-sequence included (the faster-whisper/CTranslate2 convention)."""
        return self.sum_logprob / (len(self.tokens) + 1)


# A loop: the same block of tokens LOOP_REPEATS times in a row at a sequence's end, LOOP_TOKENS
# tokens or more in all ("V-acid. V-acid. V-acid." is one; "no no no" is not). A decoder in a loop
# rarely leaves it: Whisper's run on to the token cap, which took 2-4 s of a stream's update
LOOP_REPEATS = 3
LOOP_TOKENS = 12


def ends_in_loop(seq: Sequence[int]) -> bool:
    n = len(seq)
    for p in range(1, n // LOOP_REPEATS + 1):
        copies = max(LOOP_REPEATS, -(-LOOP_TOKENS // p))
        if p * copies > n or seq[-1] != seq[-1 - p]:
            continue
        block = list(seq[n - p:])
        if all(list(seq[n - (k + 1) * p:n - k * p]) == block for k in range(1, copies)):
            return True
    return False


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits, axis=-1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


_TOP_LOGPROBS = Path(__file__).resolve().parent / "kernels" / "top_logprobs.onnx"   # tooling/kernels.py
_top_session = None
_top_lock = threading.Lock()


def top_logprobs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, log-probabilities) [rows, k] of the k most likely tokens of each row of logits
    [rows, vocab] (log-softmax over the row), best first; equal ones by lower token id. What a
    decoder step needs of the log-softmax, in one ONNX Runtime call on the caller's thread: its
    vectorised exp and selection over Whisper's 51,865 tokens took 0.9 ms for 5 rows and 6.8 ms for
    40 (random logits), where numpy's log-softmax and argpartition took 1.4 and 27 ms (BENCHMARKS.md,
    thirteenth session). The log-probabilities differ from `log_softmax`'s by about 1e-6."""
    global _top_session
    if _top_session is None:
        with _top_lock:
            if _top_session is None:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = options.inter_op_num_threads = 1
                _top_session = ort.InferenceSession(str(_TOP_LOGPROBS), options, providers=["CPUExecutionProvider"])
    values, tokens = _top_session.run(None, {"logits": np.ascontiguousarray(logits, dtype=np.float32),
                                             "k": np.array([k], dtype=np.int64)})
    return tokens, values


def _rank(hyps: list[Hypothesis], options: SearchOptions) -> list[Hypothesis]:
    return sorted(hyps, key=lambda h: h.score(options.length_penalty), reverse=True)[: max(options.n_best, 1)]


def search(
    state: DecoderState,
    first_logits: np.ndarray,
    options: SearchOptions,
    filters: Sequence[LogitFilter] = (),
    rngs: Sequence[np.random.Generator] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Decode every group from its first-step logits [groups, vocab]; n-best hypotheses per group.

    Sampling draws from each group's own generator in `rngs`, so a group's result does not depend
    on which other groups share its batch. `prefixes[g]` are tokens forced before the first
    generated one (already in the decoder's cache): the filters see them as generated, the
    returned hypotheses do not hold them."""
    if options.min_new_tokens:
        if prefixes is not None and any(prefixes):
            raise ValueError("min_new_tokens cannot be combined with forced prefixes")
        filters = (*filters, _bar_eos_before(options.min_new_tokens, options.eos))
    if prefixes is None:
        prefixes = [[]] * first_logits.shape[0]
    if options.temperature == 0 and options.beam_size > 1:
        hyps = _beam_search(state, first_logits, options, filters, prefixes)
    else:
        if rngs is None:
            rngs = [np.random.default_rng(g) for g in range(first_logits.shape[0])]
        hyps = _sample_or_greedy(state, first_logits, options, filters, rngs, prefixes)
    return hyps


def _bar_eos_before(min_tokens: int, eos: Sequence[int]) -> LogitFilter:
    def bar(logits: np.ndarray, seqs: Sequence[Sequence[int]]) -> None:
        for r, seq in enumerate(seqs):
            if len(seq) < min_tokens:
                logits[r, list(eos)] = -np.inf
    return bar


def _expand(state: DecoderState, first_logits: np.ndarray, width: int) -> np.ndarray:
    groups = np.arange(first_logits.shape[0])
    if width > 1:
        state.select(np.repeat(groups, width), groups)
        return np.repeat(first_logits, width, axis=0)
    return first_logits.copy()


def _sample_or_greedy(state, first_logits, options, filters, rngs, prefixes) -> list[list[Hypothesis]]:
    n_groups, width = first_logits.shape[0], options.width
    logits = _expand(state, first_logits, width)
    eos = np.array(options.eos)
    seqs: list[list[int]] = [list(prefixes[r // width]) for r in range(n_groups * width)]
    lps: list[list[float]] = [[] for _ in range(n_groups * width)]
    sums = np.zeros(n_groups * width)
    done_row = np.zeros(n_groups * width, dtype=bool)
    looped = np.zeros(n_groups * width, dtype=bool)
    results: list[list[Hypothesis] | None] = [None] * n_groups
    live = np.arange(n_groups)                 # original group id of each live group
    rows_of = np.arange(n_groups * width)      # original row id of each live row

    def finish(kept_mask: np.ndarray) -> None:
        for gi in np.flatnonzero(~kept_mask):
            g = live[gi]
            rs = rows_of[gi * width:(gi + 1) * width]
            skip = len(prefixes[g])
            results[g] = _rank([Hypothesis(seqs[r][skip:], lps[r], float(sums[r]), bool(done_row[r] and not looped[r]),
                                           bool(looped[r])) for r in rs], options)

    for step in range(options.max_new_tokens):
        for f in filters:
            f(logits, [seqs[r] for r in rows_of])
        if options.temperature > 0:
            logprobs = log_softmax(logits)
            probs = np.exp(log_softmax(logits / options.temperature))
            cdf = np.cumsum(probs, axis=-1)
            draws = np.concatenate([rngs[g].random(width) for g in live]) * cdf[:, -1]
            tokens = np.array([np.searchsorted(c, d, side="right") for c, d in zip(cdf, draws)])
            tokens = np.minimum(tokens, logits.shape[-1] - 1)
            chosen = logprobs[np.arange(len(tokens)), tokens]
        else:
            best, best_lp = top_logprobs(logits, 1)
            tokens, chosen = best[:, 0], best_lp[:, 0]
        for i, r in enumerate(rows_of):
            if done_row[r]:
                tokens[i] = eos[0]
                continue
            lp = float(chosen[i])
            sums[r] += lp
            lps[r].append(lp)
            if tokens[i] in eos:
                done_row[r] = True
            else:
                seqs[r].append(int(tokens[i]))
                if options.stop_loops and ends_in_loop(seqs[r]):
                    done_row[r] = looped[r] = True
        group_done = done_row[rows_of].reshape(-1, width).all(axis=1)
        if group_done.all():
            finish(np.zeros(len(live), dtype=bool))
            live = live[:0]
            break
        if group_done.any():
            finish(~group_done)
            keep_rows = np.flatnonzero(np.repeat(~group_done, width))
            state.select(keep_rows, np.flatnonzero(~group_done))
            live, rows_of, tokens = live[~group_done], rows_of[keep_rows], tokens[keep_rows]
        if step + 1 < options.max_new_tokens:   # no decoder step for logits nobody reads
            logits = state.step(tokens.astype(np.int64))
    if len(live):
        finish(np.zeros(len(live), dtype=bool))
    return results  # type: ignore[return-value]


def _fill_from_end(kept: list[int]) -> list[int]:
    """The order of the groups left after some finished (`kept`: their old places, increasing):
    a group keeps its place where that place still exists, and the last ones move into the places
    that finished groups left. So only as many groups move as finished, and a decoder state
    moves their rows and windows, not every one after a finished group."""
    n = len(kept)
    movers = iter(g for g in kept if g >= n)
    held = set(kept)
    return [p if p in held else next(movers) for p in range(n)]


def _beam_search(state, first_logits, options, filters, prefixes) -> list[list[Hypothesis]]:
    n_groups, width = first_logits.shape[0], options.beam_size
    logits = _expand(state, first_logits, width)
    eos = set(options.eos)
    max_finished = max(1, round(width * options.patience))
    seqs: list[list[int]] = [list(prefixes[r // width]) for r in range(n_groups * width)]
    lps: list[list[float]] = [[] for _ in range(n_groups * width)]
    sums = np.zeros(n_groups * width)
    finished: list[list[Hypothesis]] = [[] for _ in range(n_groups)]
    live = list(range(n_groups))

    for step in range(options.max_new_tokens):
        for f in filters:
            f(logits, seqs)
        k = min(width + len(eos), logits.shape[-1])
        top, top_lp = top_logprobs(logits, k)
        keep_rows, keep_groups, next_tokens = [], [], []
        new_seqs, new_lps, new_sums = [], [], []
        for gi, g in enumerate(live):
            candidates: dict[tuple[int, ...], tuple[float, int, int, float]] = {}
            for r in range(gi * width, (gi + 1) * width):
                for tok, lp in zip(top[r].tolist(), top_lp[r].tolist()):
                    score = sums[r] + lp
                    key = (*seqs[r], tok)
                    if key not in candidates or candidates[key][0] < score:
                        candidates[key] = (score, r, tok, lp)
            kept = []
            for key, (score, r, tok, lp) in sorted(candidates.items(), key=lambda kv: kv[1][0], reverse=True):
                if tok in eos:
                    if len(finished[g]) < max_finished:
                        finished[g].append(Hypothesis(seqs[r][len(prefixes[g]):], lps[r] + [lp], score, True))
                elif options.stop_loops and ends_in_loop((*seqs[r], tok)):
                    # a beam in a loop ends here; it is ranked with the others and marked
                    if len(finished[g]) < max_finished:
                        finished[g].append(Hypothesis((seqs[r] + [tok])[len(prefixes[g]):], lps[r] + [lp],
                                                      score, False, True))
                else:
                    kept.append((score, r, tok, lp))
                    if len(kept) == width:
                        break
            if len(finished[g]) >= max_finished:
                continue
            if len(kept) < width:  # fewer live continuations than beams (tiny vocabularies only)
                finished[g] += [Hypothesis((seqs[r] + [tok])[len(prefixes[g]):], lps[r] + [lp], score, False)
                                for score, r, tok, lp in kept]
                continue
            keep_groups.append(gi)
            for score, r, tok, lp in kept:
                keep_rows.append(r)
                next_tokens.append(tok)
                new_seqs.append(seqs[r] + [tok])
                new_lps.append(lps[r] + [lp])
                new_sums.append(score)
        if len(keep_groups) < len(live):   # groups finished: the last ones move into their places
            order = _fill_from_end(keep_groups)
            block = {gi: i for i, gi in enumerate(keep_groups)}
            entries = [block[gi] * width + j for gi in order for j in range(width)]
            keep_groups = order
            keep_rows, next_tokens, new_seqs, new_lps, new_sums = (
                [xs[i] for i in entries] for xs in (keep_rows, next_tokens, new_seqs, new_lps, new_sums))
        live = [live[gi] for gi in keep_groups]
        if not live:
            seqs = []
            break
        seqs, lps, sums = new_seqs, new_lps, np.array(new_sums)
        if step + 1 < options.max_new_tokens:
            state.select(np.array(keep_rows), np.array(keep_groups))
            logits = state.step(np.array(next_tokens, dtype=np.int64))

    # Groups cut by max_new_tokens: top up with their unfinished beams.
    for gi, g in enumerate(live):
        rows = range(gi * width, (gi + 1) * width)
        for r in sorted(rows, key=lambda r: sums[r], reverse=True):
            if len(finished[g]) >= width:
                break
            finished[g].append(Hypothesis(seqs[r][len(prefixes[g]):], lps[r], float(sums[r]), False))
    return [_rank(f, options) for f in finished]


# ---------------------------------------------------------------------------------------------
# Temperature fallback


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass(frozen=True)
class FallbackPolicy:
    """Re-decode an input at the next temperature while its result looks like a failure."""

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4   # above: too repetitive
    log_prob_threshold: float | None = -1.0           # below: too unlikely
    no_speech_threshold: float | None = 0.6           # above (with a low log-prob): silence, keep

    def __post_init__(self):
        if not self.temperatures or any(t < 0 for t in self.temperatures):
            raise ValueError("temperatures must be a non-empty sequence of values >= 0")


@dataclass
class Decoded:
    hypotheses: list[Hypothesis]   # n-best, best first
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    text: str = ""

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]

    def too_repetitive(self, max_compression: float | None) -> bool:
        """A loop the search stopped (`stop_loops`), or a text that compresses more than
        `max_compression` (None: no such check)."""
        return self.best.looped or (max_compression is not None and self.compression_ratio > max_compression)


@dataclass
class Prefilled:
    """What a family's prefill returns for a list of groups."""

    state: DecoderState
    first_logits: np.ndarray                          # [groups, vocab]
    filters: Sequence[LogitFilter] = ()
    no_speech_probs: np.ndarray | None = None         # [groups]
    prefixes: Sequence[Sequence[int]] | None = None   # tokens forced before the generated ones, per group


def decode_with_fallback(
    prefill: Callable[[list[int]], Prefilled],
    n_groups: int,
    options: SearchOptions,
    policy: FallbackPolicy,
    text_of: Callable[[list[int]], str],
    rngs: Sequence[np.random.Generator] | None = None,
) -> list[Decoded]:
    """Decode all groups at the first temperature, then only the failed ones at the next, and so on.

    `rngs` holds one generator per group for sampling (default: seeded by the group's index)."""
    rngs = list(rngs) if rngs is not None else [np.random.default_rng(g) for g in range(n_groups)]
    chosen: list[Decoded | None] = [None] * n_groups
    tried: list[list[Decoded]] = [[] for _ in range(n_groups)]
    pending = list(range(n_groups))
    for temperature in policy.temperatures:
        if not pending:
            break
        step_options = replace(options, temperature=temperature)
        pre = prefill(pending)
        results = search(pre.state, pre.first_logits, step_options, pre.filters, [rngs[g] for g in pending],
                         pre.prefixes)
        still = []
        for i, g in enumerate(pending):
            best = results[i][0]
            text = text_of(best.tokens)
            no_speech = float(pre.no_speech_probs[i]) if pre.no_speech_probs is not None else 0.0
            d = Decoded(results[i], temperature, best.avg_logprob, compression_ratio(text.strip()), no_speech, text)
            tried[g].append(d)
            if _needs_fallback(d, policy):
                still.append(g)
            else:
                chosen[g] = d
        pending = still
    for g in pending:  # every temperature failed: keep the most likely non-repetitive result
        below = [d for d in tried[g] if not d.too_repetitive(policy.compression_ratio_threshold)]
        best = max(below or tried[g], key=lambda d: d.avg_logprob)
        best.temperature = tried[g][-1].temperature
        chosen[g] = best
    return chosen  # type: ignore[return-value]


def _needs_fallback(d: Decoded, policy: FallbackPolicy) -> bool:
    low_logprob = policy.log_prob_threshold is not None and d.avg_logprob < policy.log_prob_threshold
    if policy.no_speech_threshold is not None and d.no_speech_prob > policy.no_speech_threshold and low_logprob:
        return False  # silence: nothing better will come from sampling
    return d.too_repetitive(policy.compression_ratio_threshold) or low_logprob
