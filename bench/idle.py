"""Idle footprint: the daemon's CPU time, voluntary context switches and RSS over a quiet window
with one ready sidecar, vs supervisord 4.x with the same program.

`python -m bench idle [--idle-s S]` (default 30, for each system). Context switches are summed
over every thread (/proc/PID/task/*/status); CPU is on-CPU time (schedstat) of every thread.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    Check,
    Daemon,
    ProcStats,
    Program,
    Row,
    Supervisord,
    at_most,
    demo,
    free_port,
    machine,
    proc_stats,
    report,
    row,
    scratch,
    sidecar,
    supervisord_bin,
    wait_connect,
)

BENCH = "idle"
SWITCHES_PER_30S = 2.0
RSS_MIB = 35.0
WARMUP_S = 1.0  # after readiness: the status write and output forwarding of the start settle


def window(pid: int, idle_s: float) -> tuple[ProcStats, ProcStats]:
    time.sleep(WARMUP_S)
    before = proc_stats(pid)
    time.sleep(idle_s)
    return before, proc_stats(pid)


def task_switches(pid: int) -> dict[str, int]:
    """Voluntary switches per thread (`tid name`), to show which thread wakes up."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out[f"{task.name} {name}"] = int(line.split()[1])
    return out


def rows_for(system: str, before: ProcStats, after: ProcStats, idle_s: float) -> list[Row]:
    switches = after.voluntary_switches - before.voluntary_switches
    cpu_ms = (after.cpu_s - before.cpu_s) * 1000
    return [
        row(BENCH, f"voluntary ctx switches in {idle_s:g} s", system, "count", [switches]),
        row(BENCH, f"CPU time in {idle_s:g} s", system, "ms", [cpu_ms]),
        row(BENCH, "RSS at the end", system, "MiB", [after.rss_kib / 1024]),
    ]


def run(idle_s: float) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    binary = supervisord_bin(notes)
    port = free_port()
    with scratch(BENCH) as work, Daemon(work, [sidecar("demo", port)]) as daemon:
        daemon.wait_for("sidecar_ready")
        start_switches = task_switches(daemon.pid)
        before, after = window(daemon.pid, idle_s)
        end_switches = task_switches(daemon.pid)
    rows = rows_for("ours", before, after, idle_s)
    woke = {t: n - start_switches.get(t, 0) for t, n in end_switches.items()}
    notes.append(f"our daemon's threads (tid name: switches over warm-up + window): {woke}")
    if binary is not None:
        port = free_port()
        with scratch(BENCH) as work, Supervisord(binary, work, [Program("demo", demo(port))]) as sd:
            wait_connect(port, 20.0)
            their_before, their_after = window(sd.pid, idle_s)
        theirs = rows_for("supervisord", their_before, their_after, idle_s)
        rows = [r for pair in zip(rows, theirs, strict=True) for r in pair]
    # The target is per 30 s; a longer window may have proportionally more.
    limit = SWITCHES_PER_30S * max(1.0, idle_s / 30.0)
    checks = [
        at_most(BENCH, f"ours, voluntary ctx switches in {idle_s:g} s", rows[0].median, limit, ""),
        at_most(BENCH, "ours, RSS", after.rss_kib / 1024, RSS_MIB, "MiB"),
    ]
    notes.append(f"window {idle_s:g} s, starting {WARMUP_S:g} s after readiness")
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench idle", description=__doc__)
    parser.add_argument("--idle-s", type=float, default=30.0, help="length of the quiet window")
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.idle_s, 1.0))
    report(f"idle footprint; {machine()}", rows, checks, notes)
    return 0
