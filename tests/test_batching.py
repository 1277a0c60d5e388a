"""Dynamic batching: grouping by length under a count and a memory budget; padding accounting."""

from qasr_edge.batching import PaddingStats, fit_count, plan_batches


def test_batches_group_similar_lengths_longest_first():
    lengths = [10, 80, 20, 70, 75, 15]
    batches = plan_batches(lengths, max_batch=3, budget_bytes=10**9, bytes_of=lambda n, longest: 0)
    assert batches == [[1, 4, 3], [2, 5, 0]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))


def test_memory_budget_bounds_a_batch_before_the_count_does():
    lengths = [100, 90, 10, 5]
    # a batch costs count * longest bytes: two long items fit in 200, four short ones in 40
    batches = plan_batches(lengths, max_batch=8, budget_bytes=200, bytes_of=lambda n, longest: n * longest)
    assert batches == [[0, 1], [2, 3]]
    # an item over budget on its own still runs, alone
    assert plan_batches([500, 1], 8, 100, lambda n, longest: n * longest) == [[0], [1]]


def test_padding_fraction_counts_what_sorting_saves():
    lengths = [10, 80, 20, 70]
    in_order, by_length = PaddingStats(), PaddingStats()
    for start in (0, 2):
        in_order.add(lengths[start:start + 2])
    for batch in plan_batches(lengths, 2, 10**9, lambda n, longest: 0):
        by_length.add([lengths[i] for i in batch])
    assert in_order.padded == 70 + 50 and by_length.padded == 10 + 10
    assert by_length.padding_fraction < in_order.padding_fraction
    fixed = PaddingStats()
    fixed.add([100, 3000], padded_to=3000)
    assert fixed.to_dict()["padding_fraction"] == round(2900 / 6000, 4)


def test_fit_count():
    assert fit_count(100, 1000, 8) == 8 and fit_count(300, 1000, 8) == 3 and fit_count(5000, 1000, 8) == 1


def test_speech_regions_and_chunks():
    import numpy as np

    from qasr_edge.vad import chunk_regions, speech_regions

    probs = np.zeros(200)
    probs[10:30] = 0.9      # speech
    probs[33:40] = 0.9      # after a 3-frame pause: the same region (hysteresis + min silence)
    probs[60:62] = 0.9      # 2 frames: too short to be speech
    probs[100:190] = 0.8
    regions = speech_regions(probs, 512, min_speech=8, min_silence=16, pad=0)
    assert regions == [(10 * 512, 40 * 512), (100 * 512, 190 * 512)]
    # regions merge while a chunk stays within the limit; a longer region is cut evenly
    assert chunk_regions(regions, 200 * 512) == [(10 * 512, 190 * 512)]
    chunks = chunk_regions(regions, 50 * 512)
    assert chunks[0] == (10 * 512, 40 * 512) and len(chunks) == 3
    assert all(e - s <= 50 * 512 for s, e in chunks) and chunks[-1][1] == 190 * 512
