"""Ready latency: from the child's socket listening to the daemon's `sidecar_ready`.

`python -m bench ready [--samples N]`. One daemon per probe kind (tcp, http). Each sample is one
launch of the demo child, which appends `listening PID NS` to a report file right after listen():
the first launch at daemon start, then restarts after the bench SIGKILLs the child (base_delay 0).
The daemon's instant is the `timestamp` of its `sidecar_ready` line (microseconds, taken inside the
daemon before the line is written: the precise figure, used for the target); the instant the line
reaches the bench's reader thread is shown as well (it adds pipe and thread wake-up latency).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from bench.common import (
    SETTLE_S,
    Check,
    Daemon,
    Row,
    arrival_ns,
    at_most,
    free_port,
    kill_and_wait,
    machine,
    ns_to_ms,
    report,
    row,
    scratch,
    sidecar,
    stamp_ns,
    wait_report,
)

TARGET_MS = 15.0
BENCH = "ready"


def measure(kind: str, samples: int) -> list[Row]:
    stamped: list[float] = []
    arrived: list[float] = []
    starting: list[float] = []
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        entry = sidecar(
            "demo",
            port,
            "--report",
            str(listen_report),
            ready={"probe": kind, "path": "/health"} if kind == "http" else {"probe": kind},
            restart={"base_delay": 0.0, "max_attempts": 1_000_000},
        )
        with Daemon(work, [entry]) as daemon:
            for n in range(1, samples + 1):
                ready = daemon.wait_for("sidecar_ready", count=n)
                spawned = daemon.wait_for("sidecar_spawned", count=n)
                pid, listened_ns = wait_report(listen_report, n, 5.0)
                if ready["pid"] != pid:
                    raise RuntimeError(f"sidecar_ready names pid {ready['pid']}, not {pid}")
                stamped.append(ns_to_ms(stamp_ns(ready) - listened_ns))
                arrived.append(ns_to_ms(arrival_ns(ready) - listened_ns))
                starting.append(ns_to_ms(listened_ns - stamp_ns(spawned)))
                time.sleep(SETTLE_S)
                if n < samples:
                    kill_and_wait(pid)
    return [
        row(BENCH, f"listening -> sidecar_ready, {kind} (timestamp)", "ours", "ms", stamped),
        row(BENCH, f"listening -> sidecar_ready, {kind} (arrival)", "ours", "ms", arrived),
        row(BENCH, f"sidecar_spawned -> listening, {kind}", "demo child", "ms", starting),
    ]


def run(samples: int) -> tuple[list[Row], list[Check]]:
    rows: list[Row] = []
    checks: list[Check] = []
    for kind in ("tcp", "http"):
        measured = measure(kind, samples)
        rows += measured
        checks.append(at_most(BENCH, f"{kind} probe, median", measured[0].median, TARGET_MS, "ms"))
    return rows, checks


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ready", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="launches per probe kind (>= 20)")
    args = parser.parse_args(argv)
    rows, checks = run(max(args.samples, 20))
    report(f"ready latency; {machine()}", rows, checks, [])
    return 0
