"""Tiny random Qwen3-ASR checkpoints and the official reference backend, for the tests.

The code lives in the package (`qasr_edge.tooling.qwen3_reference`) because `qasr-edge bench qwen3`
builds its random checkpoints at the real shapes with it too.
"""

from qasr_edge.tooling.qwen3_reference import (  # noqa: F401
    CHAT_TEMPLATE, CORPUS, REAL_SPECIAL_IDS, SPECIAL_TOKENS, Official, build_checkpoint, build_real_tokenizer,
    build_tokenizer, clip, make_eos_follow, reference, reference_dir)
