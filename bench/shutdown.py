"""Graceful shutdown: SIGTERM to the daemon until the daemon has exited and its child is gone.

`python -m bench shutdown [--samples N] [--slow-samples N]`. A fresh daemon per sample, its demo
child ready. Two children: a cooperative one (exits on SIGTERM) and one that ignores SIGTERM, with
`stop.timeout = 1` (the figure is the overshoot past that second). Ours vs supervisord 4.x
(`stopwaitsecs=1`, `stopasgroup`, `killasgroup`). The bench waits on the daemon's exit (waitpid)
and then checks that no process of the child's group is left.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    SETTLE_S,
    Check,
    Daemon,
    Program,
    Row,
    Supervisord,
    at_most,
    demo,
    free_port,
    machine,
    ns_to_ms,
    report,
    row,
    scratch,
    sidecar,
    supervisord_bin,
    wait_connect,
    wait_exited,
    wait_report,
)

BENCH = "shutdown"
TARGET_MS = 50.0
STOP_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Case:
    label: str
    demo_args: tuple[str, ...]
    expected_ms: float  # what the stop must take by design (the stop timeout for an ignorer)


COOPERATIVE = Case("cooperative child: SIGTERM -> all gone", (), 0.0)
IGNORING = Case(
    "SIGTERM-ignoring child: overshoot past 1 s", ("--ignore-sigterm",), STOP_TIMEOUT_S * 1000
)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def measure(
    start: Callable[[Path, int, Path], AbstractContextManager[subprocess.Popen[bytes]]],
    case: Case,
    samples: int,
) -> list[float]:
    """ms from SIGTERM to the supervisor's exit, minus what the case must take by design."""
    out = []
    for _ in range(samples):
        port = free_port()
        with scratch(BENCH) as work:
            listen_report = work / "report"
            with start(work, port, listen_report) as proc:
                child, _ = wait_report(listen_report, 1, 20.0)
                wait_connect(port, 20.0)
                time.sleep(SETTLE_S)
                sent_ns = time.time_ns()
                proc.terminate()
                wait_exited(proc, 30)
                gone_ns = time.time_ns()
                if not group_gone(child):
                    raise RuntimeError(f"the child's group {child} survived the shutdown")
            out.append(ns_to_ms(gone_ns - sent_ns) - case.expected_ms)
    return out


def ours(
    case: Case,
) -> Callable[[Path, int, Path], AbstractContextManager[subprocess.Popen[bytes]]]:
    @contextmanager
    def start(work: Path, port: int, listen_report: Path) -> Iterator[subprocess.Popen[bytes]]:
        entry = sidecar(
            "demo",
            port,
            "--report",
            str(listen_report),
            *case.demo_args,
            stop={"timeout": STOP_TIMEOUT_S},
        )
        with Daemon(work, [entry]) as daemon:
            daemon.wait_for("sidecar_ready")
            yield daemon.proc

    return start


def theirs(
    binary: Path, case: Case
) -> Callable[[Path, int, Path], AbstractContextManager[subprocess.Popen[bytes]]]:
    @contextmanager
    def start(work: Path, port: int, listen_report: Path) -> Iterator[subprocess.Popen[bytes]]:
        command = demo(port, "--report", str(listen_report), *case.demo_args)
        with Supervisord(binary, work, [Program("demo", command, STOP_TIMEOUT_S)]) as sd:
            yield sd.proc

    return start


def run(samples: int, slow_samples: int) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    binary = supervisord_bin(notes)
    rows: list[Row] = []
    checks: list[Check] = []
    for case, count in ((COOPERATIVE, samples), (IGNORING, slow_samples)):
        mine = row(BENCH, case.label, "ours", "ms", measure(ours(case), case, count))
        rows.append(mine)
        checks.append(at_most(BENCH, f"{case.label}, median", mine.median, TARGET_MS, "ms"))
        if binary is not None:
            other = measure(theirs(binary, case), case, count)
            rows.append(row(BENCH, case.label, "supervisord", "ms", other))
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench shutdown", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="cooperative runs (>= 20)")
    parser.add_argument(
        "--slow-samples", type=int, default=10, help="runs with the SIGTERM-ignoring child"
    )
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.samples, 20), max(args.slow_samples, 1))
    report(f"graceful shutdown; {machine()}", rows, checks, notes)
    return 0
