"""The small ONNX graphs the runtime ships (qasr_edge/kernels/): what tooling builds, and what they compute."""

import numpy as np

from qasr_edge.search import log_softmax, top_logprobs
from qasr_edge.tooling.kernels import BUILDERS, KERNELS


def test_shipped_kernels_are_what_the_tooling_builds():
    assert sorted(p.name for p in KERNELS.glob("*.onnx")) == sorted(BUILDERS)
    for name, build in BUILDERS.items():
        assert (KERNELS / name).read_bytes() == build().SerializeToString(), f"{name}: run python -m qasr_edge.tooling.kernels"


def test_top_logprobs_are_the_log_softmax_largest_first():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((7, 51865)) * 4).astype(np.float32)
    logits[1, [10, 20, 30]] = 50.0          # a tie at the top: lower ids first
    logits[2, :] = -np.inf                  # a filter barred all but two tokens
    logits[2, [7, 9]] = [1.0, 3.0]
    tokens, values = top_logprobs(logits, 6)
    assert tokens.shape == values.shape == (7, 6)
    full = log_softmax(logits)
    np.testing.assert_allclose(values, np.take_along_axis(full, tokens, axis=-1), atol=2e-5)
    for r in (0, 3, 4, 5, 6):
        assert tokens[r].tolist() == np.argsort(-full[r], kind="stable")[:6].tolist()
    assert tokens[1, :3].tolist() == [10, 20, 30]
    assert tokens[2, :2].tolist() == [9, 7] and np.all(np.isneginf(values[2, 2:]))
    np.testing.assert_allclose(np.exp(values[2, :2]).sum(), 1.0, rtol=1e-6)
    one, best = top_logprobs(logits[:1], 1)
    assert one.tolist() == [[int(np.argmax(logits[0]))]] and best[0, 0] == values[0, 0]
