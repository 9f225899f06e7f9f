"""`python -m bench NAME [ARGS]`: run one benchmark, `bench/NAME.py`, through its `main(argv)`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

BENCHMARKS = {
    "preflight": "bench.preflight",
}


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        print(f"usage: python -m bench NAME [ARGS]  (NAME: {names})", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    run = cast(Callable[[Sequence[str]], int], module.main)
    return run(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
