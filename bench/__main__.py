"""`python -m bench NAME [ARGS] [NAME [ARGS]...]` or `python -m bench all`: run benchmarks.

Each benchmark is `bench/NAME.py` with a `main(argv)`; the options after a name are its own.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

BENCHMARKS = {
    "preflight": "bench.preflight",
    "ready": "bench.ready",
    "respawn": "bench.respawn",
    "shutdown": "bench.shutdown",
    "idle": "bench.idle",
    "scale": "bench.scale",
    "cli": "bench.cli",
    "handoff": "bench.handoff",
    "control": "bench.control",
    "output": "bench.output",
    "coldstart": "bench.coldstart",
    "cgroups": "bench.cgroups",
    "relaunch": "bench.relaunch",
}


def plan(argv: Sequence[str]) -> list[tuple[str, list[str]]] | None:
    """[(name, its args)] in order; `all` stands for every benchmark with default options."""
    runs: list[tuple[str, list[str]]] = []
    for arg in argv:
        if arg == "all":
            runs += [(name, []) for name in BENCHMARKS]
        elif arg in BENCHMARKS:
            runs.append((arg, []))
        elif runs:
            runs[-1][1].append(arg)
        else:
            return None
    return runs or None


def main(argv: Sequence[str]) -> int:
    runs = plan(argv)
    if runs is None:
        names = ", ".join(BENCHMARKS)
        print(
            f"usage: python -m bench NAME [ARGS] [NAME [ARGS]...] | all  (NAME: {names})",
            file=sys.stderr,
        )
        return 2
    worst = 0
    for name, args in runs:
        module = importlib.import_module(BENCHMARKS[name])
        run = cast(Callable[[Sequence[str]], int], module.main)
        worst = max(worst, run(args))
    return worst


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
