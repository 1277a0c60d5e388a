"""`qasr-edge bench`: reproducible side-by-side timings of qasr_edge and a peer implementation.

Each side (ours, the peer) runs in its own fresh Python process, so that its peak RSS is its own
high-water mark and its load time is a cold start (session creation included). Sides alternate,
`--repeat K` times, and the run with the best wall time of each side is kept.

- `harness.py`: the side processes, meters (peak RSS, decoder calls), the table and the JSON line.
- `qwen3.py`: Qwen3-ASR at the published 0.6B / 1.7B shapes with random weights vs the official
  `qwen-asr` transformers backend on the same checkpoint.
- `whisper.py`: whisper-base vs faster-whisper (sequential and batched).
- `__main__.py`: run one side by hand (`python -m qasr_edge.benchmark '<json spec>'`).

Peers and the offline tooling are imported only inside the side processes that need them.
"""
