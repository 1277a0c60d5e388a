"""A side process of `qasr-edge bench` by hand: `python -m qasr_edge.benchmark '<json spec>'`."""

import sys

from .harness import side_main

if __name__ == "__main__":
    side_main(sys.argv[1:])
