"""Whisper side by side on a named workload: a thin wrapper over `qasr-edge bench whisper`.

    python bench/bench_whisper.py --threads 2 --precision int8 --json                 # the 270 s meeting
    python bench/bench_whisper.py --workload short_clips_36 --threads 2 --precision int8 --json
    python bench/bench_whisper.py --audio a.wav b.wav --no-peer

Any other option goes to `qasr-edge bench whisper` (see its --help); `--compute-type` is kept as the
old name of `--peer-compute-type`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    from workloads import WORKLOADS

    from qasr_edge.cli import main as cli

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="long_meeting")
    p.add_argument("--compute-type", default=None)
    args, rest = p.parse_known_args()
    if "--audio" not in rest:
        rest += ["--audio", *map(str, WORKLOADS[args.workload]())]
    if args.compute_type:
        rest += ["--peer-compute-type", args.compute_type]
    return cli(["bench", "whisper", *rest])


if __name__ == "__main__":
    sys.exit(main())
