"""Layer 1: the search layer on hand-built logits (no model; ONNX Runtime only for its top-k kernel)."""

import numpy as np
import pytest

from qasr_edge.search import (FallbackPolicy, Prefilled, SearchOptions, compression_ratio,
                              decode_with_fallback, ends_in_loop, log_softmax, search)

EOS = 0


class TableState:
    """A bigram 'decoder': next-token log-probs depend only on the row's last token."""

    def __init__(self, table: np.ndarray, first_tokens: np.ndarray, n_groups: int):
        self.table = table
        self.last = np.asarray(first_tokens)
        self.groups = np.arange(n_groups)
        self.steps = 0

    def step(self, tokens):
        self.steps += 1
        self.last = np.asarray(tokens)
        return self.table[self.last].copy()

    def select(self, rows, groups):
        assert len(rows) % max(len(groups), 1) == 0
        self.last = self.last[np.asarray(rows)]
        self.groups = self.groups[np.asarray(groups)]


def bigram(probs: dict[int, dict[int, float]], vocab: int) -> np.ndarray:
    """Log-probabilities of the listed pairs; the rest -30, and an unlisted end -40: beams fill up
    with unlikely tokens (equal ones taken by lower id) rather than with hypotheses ended at once."""
    table = np.full((vocab, vocab), -30.0, dtype=np.float32)
    table[:, EOS] = -40.0
    for a, row in probs.items():
        for b, p in row.items():
            table[a, b] = np.log(p)
    return table


# From the start token 1: greedy takes 2 (0.6) then is stuck with a 0.4 continuation; beam search
# finds 3 (0.4) followed by a certain end (0.4 * 1.0 > 0.6 * 0.4).
TABLE = bigram({1: {2: 0.6, 3: 0.4}, 2: {4: 0.4, 5: 0.35, EOS: 0.25}, 3: {EOS: 1.0},
                4: {EOS: 1.0}, 5: {EOS: 1.0}}, vocab=6)


def run(options, groups=1, filters=()):
    state = TableState(TABLE, np.ones(groups, dtype=int), groups)
    first = np.repeat(TABLE[[1]], groups, axis=0)
    return search(state, first, options, filters)


def test_greedy_follows_argmax_and_reports_logprobs():
    hyp = run(SearchOptions(beam_size=1, eos=(EOS,)))[0][0]
    assert hyp.tokens == [2, 4] and hyp.finished
    expected = np.log([0.6, 0.4, 1.0])
    np.testing.assert_allclose(hyp.token_logprobs, expected, atol=1e-4)
    assert hyp.sum_logprob == pytest.approx(expected.sum(), abs=1e-4)
    assert hyp.avg_logprob == pytest.approx(expected.sum() / 3, abs=1e-4)


def test_beam_search_finds_the_more_likely_sequence():
    nbest = run(SearchOptions(beam_size=3, eos=(EOS,), n_best=3, length_penalty=0.0))[0]
    assert nbest[0].tokens == [3]
    assert nbest[0].sum_logprob == pytest.approx(np.log(0.4), abs=1e-4)
    assert [h.tokens for h in nbest[1:]] == [[2, 4], [2]]
    scores = [h.sum_logprob for h in nbest]
    assert scores == sorted(scores, reverse=True)


def test_length_penalty_ranks_by_mean_logprob():
    nbest = run(SearchOptions(beam_size=3, eos=(EOS,), n_best=3, length_penalty=1.0))[0]
    means = [h.sum_logprob / len(h.tokens) for h in nbest]
    assert means == sorted(means, reverse=True)


def test_batched_groups_match_single_runs():
    for opts in (SearchOptions(beam_size=1, eos=(EOS,)), SearchOptions(beam_size=4, eos=(EOS,))):
        alone = run(opts)[0][0]
        batched = run(opts, groups=3)
        assert all(b[0].tokens == alone.tokens for b in batched)
        assert all(b[0].sum_logprob == pytest.approx(alone.sum_logprob) for b in batched)


def test_finished_groups_leave_their_places_to_the_last_groups():
    """When groups finish, the last groups move into their places (only as many groups move as
    finished), and every group still gets what it gets alone."""
    # a group's start token decides how many tokens it says before the end: 1 -> 0, 2 -> 1, 4 -> 2
    table = bigram({1: {EOS: 1.0}, 2: {3: 1.0}, 3: {EOS: 1.0}, 4: {5: 1.0}, 5: {6: 1.0}, 6: {EOS: 1.0}}, vocab=7)
    starts = np.array([4, 1, 2, 4, 2])
    options = SearchOptions(beam_size=3, eos=(EOS,), patience=1 / 3)

    class Recording(TableState):
        def __init__(self, *args):
            super().__init__(*args)
            self.orders = []

        def select(self, rows, groups):
            super().select(rows, groups)
            self.orders.append(self.groups.tolist())

    state = Recording(table, starts, len(starts))
    batched = search(state, table[starts], options)
    # expanded to beams; group 1 ends first and the last group takes its place; then the groups
    # that started with 2 (now at places 1 and 2) end, and group 3 takes place 1
    assert state.orders == [[0, 1, 2, 3, 4], [0, 4, 2, 3], [0, 3]]
    for g, start in enumerate(starts):
        alone = search(TableState(table, starts[[g]], 1), table[starts[[g]]], options)[0][0]
        assert batched[g][0].tokens == alone.tokens == {1: [], 2: [3], 4: [5, 6]}[start]


def test_max_new_tokens_cuts_unfinished():
    loop = bigram({1: {1: 0.9, 2: 0.1}, 2: {2: 0.9, 1: 0.1}}, vocab=4)  # end is ~impossible
    for beam in (1, 2):
        state = TableState(loop, np.ones(1, dtype=int), 1)
        hyp = search(state, loop[[1]], SearchOptions(beam_size=beam, eos=(EOS,), max_new_tokens=5))[0][0]
        assert len(hyp.tokens) <= 5
        assert not hyp.finished and len(hyp.tokens) == 5


def test_a_loop_is_a_block_said_three_times_over_twelve_tokens_or_more():
    assert ends_in_loop([9, 8] + [1, 2, 3, 4] * 3)
    assert ends_in_loop([1, 2, 3, 4] * 3 + [1])          # the block may start anywhere
    assert not ends_in_loop([1, 2, 3, 4] * 2 + [1, 2, 3, 5])
    assert not ends_in_loop([1, 2, 3] * 3)               # "no no no": too short to be a loop
    assert not ends_in_loop([7, 8] * 5) and ends_in_loop([7, 8] * 6)
    assert not ends_in_loop([5] * 11) and ends_in_loop([5] * 12)


# from 1: 2 3 4 5 6 7 2 3 4 ... for ever: once in the cycle there is no end, and every other
# beam is in it too (its tokens only lead on to cycle tokens)
CYCLE = bigram({1: {2: 0.9, EOS: 0.1}, 2: {3: 0.99}, 3: {4: 0.99}, 4: {5: 0.99}, 5: {6: 0.99}, 6: {7: 0.99},
                7: {2: 0.99}}, vocab=8)
CYCLE[2:, [EOS, 1]] = -np.inf


@pytest.mark.parametrize("beam", [1, 3])
def test_stop_loops_ends_a_looping_hypothesis_at_its_third_repeat(beam):
    def decode(stop):
        state = TableState(CYCLE, np.ones(1, dtype=int), 1)
        hyp = search(state, CYCLE[[1]].copy(), SearchOptions(beam_size=beam, eos=(EOS,), max_new_tokens=100,
                                                             stop_loops=stop))[0][0]
        return hyp, state.steps

    hyp, steps = decode(True)
    assert hyp.looped and not hyp.finished
    assert hyp.tokens == [2, 3, 4, 5, 6, 7] * 3
    assert ends_in_loop(hyp.tokens) and not ends_in_loop(hyp.tokens[:-1])
    assert steps == 17   # no decoder step once the loop was seen
    hyp, steps = decode(False)   # the reference search runs on to the cap
    assert not hyp.looped and len(hyp.tokens) == 100 and steps == 99


def test_a_looped_result_falls_back_like_a_repetitive_one():
    # the text of the loop is short enough to pass the compression check: the mark decides
    def prefill(groups):
        return Prefilled(TableState(CYCLE, np.ones(len(groups), dtype=int), len(groups)),
                         np.repeat(CYCLE[[1]], len(groups), axis=0))

    out = decode_with_fallback(prefill, 1, SearchOptions(beam_size=2, eos=(EOS,), max_new_tokens=100, stop_loops=True),
                               FallbackPolicy(temperatures=(0.0, 1.0), log_prob_threshold=None), lambda toks: "words")
    assert out[0].temperature == 1.0


def test_filters_are_applied_every_step():
    def ban_four(logits, generated):
        logits[:, 4] = -np.inf

    hyp = run(SearchOptions(beam_size=1, eos=(EOS,)), filters=[ban_four])[0][0]
    assert 4 not in hyp.tokens and hyp.tokens == [2, 5]


def test_sampling_is_seeded_and_respects_temperature():
    opts = SearchOptions(beam_size=1, best_of=4, temperature=1.0, eos=(EOS,), n_best=4)
    a = run(opts)[0]
    b = search(TableState(TABLE, np.ones(1, dtype=int), 1), TABLE[[1]].copy(), opts, rngs=[np.random.default_rng(0)])
    assert [h.tokens for h in a] == [h.tokens for h in b[0]]
    # Very low temperature behaves like greedy.
    cold = run(SearchOptions(best_of=3, temperature=1e-4, eos=(EOS,)))[0][0]
    assert cold.tokens == [2, 4]


def test_log_softmax_rows_normalise():
    x = np.random.default_rng(1).normal(size=(3, 7)).astype(np.float32)
    x[0, 2] = -np.inf
    p = np.exp(log_softmax(x))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert p[0, 2] == 0


def test_compression_ratio_flags_repetition():
    assert compression_ratio("the cat sat on the mat") < 1.5
    assert compression_ratio("la " * 100) > 2.4


def test_fallback_retries_only_failed_groups_at_higher_temperature():
    # Group 0 decodes to a repetitive text at temperature 0 and must fall back; group 1 is fine.
    texts = {(2, 4): "a clean sentence", (3,): "la la la la la la la la la la la la la la la la la la la"}
    calls = []

    def prefill(groups):
        calls.append(list(groups))
        first = np.stack([bigram({1: {2: 0.95, 3: 0.05}}, 6)[1] if g == 1 else bigram({1: {3: 0.9, 2: 0.1}}, 6)[1] for g in groups])
        return Prefilled(TableState(TABLE, np.ones(len(groups), dtype=int), len(groups)), first)

    out = decode_with_fallback(prefill, 2, SearchOptions(beam_size=2, eos=(EOS,)),
                               FallbackPolicy(temperatures=(0.0, 0.5, 1.0), log_prob_threshold=None),
                               lambda toks: texts.get(tuple(toks), "other words"))
    assert calls[0] == [0, 1] and all(c == [0] for c in calls[1:])
    assert out[1].temperature == 0.0 and out[1].best.tokens == [2, 4]
    assert out[0].temperature > 0.0


def test_sampled_group_does_not_depend_on_its_batch_mates():
    opts = SearchOptions(best_of=3, temperature=1.0, eos=(EOS,), n_best=3)
    alone = run_with_rngs(opts, [np.random.default_rng(7)])[0]
    batched = run_with_rngs(opts, [np.random.default_rng(1), np.random.default_rng(7)])[1]
    assert [h.tokens for h in alone] == [h.tokens for h in batched]


def run_with_rngs(options, rngs):
    state = TableState(TABLE, np.ones(len(rngs), dtype=int), len(rngs))
    return search(state, np.repeat(TABLE[[1]], len(rngs), axis=0), options, rngs=rngs)


def test_min_new_tokens_bars_end_of_sequence():
    # a state whose logits always favour eos (id 0): greedy stops at once unless barred
    class AlwaysEos:
        def step(self, tokens):
            logits = np.zeros((tokens.shape[0], 4), np.float32)
            logits[:, 0] = 5.0
            logits[:, 2] = 1.0
            return logits

        def select(self, rows, groups):
            pass

    first = AlwaysEos().step(np.zeros(2, np.int64))
    for beam in (1, 3):
        opts = SearchOptions(beam_size=beam, max_new_tokens=6, min_new_tokens=4, eos=(0,))
        hyps = search(AlwaysEos(), first.copy(), opts)
        assert [h[0].tokens for h in hyps] == [[2, 2, 2, 2]] * 2
        assert all(h[0].finished for h in hyps)
    with pytest.raises(ValueError):
        SearchOptions(max_new_tokens=3, min_new_tokens=4, eos=(0,))


def test_no_decoder_step_after_the_last_token():
    class Counting:
        steps = 0

        def step(self, tokens):
            Counting.steps += 1
            return np.tile(np.array([-20.0, 0.5, 1.0, 0.2], np.float32), (tokens.shape[0], 1))

        def select(self, rows, groups):
            pass

    for beam in (1, 3):
        Counting.steps = 0
        first = np.array([[-20.0, 0.5, 1.0, 0.2]], np.float32)
        hyps = search(Counting(), first, SearchOptions(beam_size=beam, max_new_tokens=5, eos=(0,)))
        assert len(hyps[0][0].tokens) == 5 and Counting.steps == 4


@pytest.mark.parametrize("beam", [1, 2])
def test_forced_prefixes_are_seen_by_filters_but_not_returned(beam):
    seen = []

    def record(logits, seqs):
        seen.append([list(s) for s in seqs])

    state = TableState(TABLE, np.ones(2, dtype=int), 2)
    first = np.repeat(TABLE[[1]], 2, axis=0)
    hyps = search(state, first, SearchOptions(beam_size=beam, eos=(EOS,)), [record], prefixes=[[9, 8], []])
    assert seen[0][0] == [9, 8] and seen[0][-1] == []           # group 0's rows start from its prefix
    assert all(h.tokens[:2] != [9, 8] for h in hyps[0])
    assert hyps[0][0].tokens == hyps[1][0].tokens                # same logits: same result, prefix left out
    with pytest.raises(ValueError):
        search(state, first, SearchOptions(min_new_tokens=1, max_new_tokens=3, eos=(EOS,)), prefixes=[[9], []])
