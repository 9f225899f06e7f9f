"""50 sidecars: time until all are ready, then a crash storm (every child exits 0.5 s after it
starts, `base_delay = 0`), then back to calm; the daemon's CPU share and fds during the storm, and
its fd count and RSS before and after it, and after a second storm (a leak keeps growing).

`python -m bench scale [--sidecars N] [--storm-s S] [--storms K]`. One daemon throughout: storm
and calm are entered by rewriting its config and sending SIGHUP (every sidecar changes, so all
restart). The daemon's CPU is utime + stime of the whole process (/proc/PID/stat: worker threads
that exit during a storm keep their share), per storm; the RSS is taken in the calm after each.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.common import (
    Check,
    Daemon,
    Event,
    ProcStats,
    Row,
    arrival_ns,
    at_most,
    free_ports,
    machine,
    ns_to_ms,
    proc_stats,
    report,
    row,
    scratch,
    sidecar,
    stamp_ns,
)

BENCH = "scale"
ALL_READY_S = 5.0
CPU_SHARE = 0.30
SETTLE_S = 2.0  # after the last `sidecar_ready`: trailing status writes and output drains finish
RSS_SLACK_MIB = 0.5  # growth tolerated between the last two storms (a leak keeps growing)
CRASH_AFTER_S = 0.5
CPU_PER_SPAWN_MS = 4.0


def sidecars(ports: Sequence[int], *demo_args: str) -> list[dict[str, Any]]:
    return [
        sidecar(
            f"demo-{i}",
            port,
            *demo_args,
            restart={"base_delay": 0.0, "max_attempts": 1_000_000, "reset_after": 0.05},
        )
        for i, port in enumerate(ports)
    ]


def all_ready(daemon: Daemon, names: int, after_ns: int, timeout_s: float = 120.0) -> Event:
    """The `sidecar_ready` that completes the set of `names` sidecars ready since `after_ns`."""
    seen: set[str] = set()
    count = 0
    while True:
        count += 1
        event = daemon.wait_for(
            "sidecar_ready",
            count=count,
            where=lambda e: arrival_ns(e) >= after_ns,
            timeout=timeout_s,
        )
        seen.add(str(event.get("sidecar")))
        if len(seen) == names:
            return event


def storm(
    daemon: Daemon, ports: list[int], storm_s: float, table: Mapping[str, object]
) -> tuple[ProcStats, ProcStats, list[float], int]:
    """Every child crashes CRASH_AFTER_S after it starts, for `storm_s`; then calm again."""
    daemon.write_config(sidecars(ports, "--crash-after", str(CRASH_AFTER_S)), table)
    spawned_at_hup = daemon.count("sidecar_spawned")
    daemon.proc.send_signal(signal.SIGHUP)
    # Every sidecar restarted under the storm config. (Not `config_reloaded`: it waits until
    # each has settled, and under load a child that crashes 0.5 s after its start may never
    # become ready first.)
    daemon.wait_for("sidecar_spawned", count=spawned_at_hup + len(ports), timeout=60.0)
    start, spawned_before = proc_stats(daemon.pid), daemon.count("sidecar_spawned")
    fds: list[float] = []
    deadline = time.monotonic() + storm_s
    while time.monotonic() < deadline:
        time.sleep(1.0)
        fds.append(proc_stats(daemon.pid).fds)
    end, spawned_after = proc_stats(daemon.pid), daemon.count("sidecar_spawned")
    daemon.write_config(sidecars(ports), table)
    calm_ns = time.time_ns()
    daemon.proc.send_signal(signal.SIGHUP)
    all_ready(daemon, len(ports), calm_ns)
    time.sleep(SETTLE_S)
    return start, end, fds, spawned_after - spawned_before


def run(
    count: int, storm_s: float, storms: int = 2, isolation: str = "auto"
) -> tuple[list[Row], list[Check], list[str]]:
    ports = free_ports(count)
    notes: list[str] = [f'isolation = "{isolation}"']
    table = {"isolation": isolation}
    with scratch(BENCH) as work, Daemon(work, sidecars(ports), table) as daemon:
        last = all_ready(daemon, count, daemon.started_ns)
        ready_s = (stamp_ns(last) - daemon.started_ns) / 1e9
        time.sleep(SETTLE_S)
        calm_before = proc_stats(daemon.pid)
        storm_start, storm_end, fds, spawned = storm(daemon, ports, storm_s, table)
        calm_after = proc_stats(daemon.pid)
        # More storms: the first one grows the allocator's pools to their working size; a
        # leak keeps growing with every storm, that high-water mark does not.
        calms = [calm_after]
        per_spawn = [(storm_end.cpu_total_s - storm_start.cpu_total_s) * 1000 / max(1, spawned)]
        for _ in range(storms - 1):
            start_k, end_k, _, spawned_k = storm(daemon, ports, storm_s, table)
            per_spawn.append((end_k.cpu_total_s - start_k.cpu_total_s) * 1000 / max(1, spawned_k))
            calms.append(proc_stats(daemon.pid))
        calm_after_second = calms[-1]
        exhausted = daemon.count("restart_budget_exhausted")
    cpu_share = (storm_end.cpu_total_s - storm_start.cpu_total_s) / storm_s
    spawns_per_s = spawned / storm_s
    cpu_per_spawn_ms = per_spawn[0]
    rows = [
        row(BENCH, f"daemon start -> all {count} ready", "ours", "s", [ready_s]),
        row(BENCH, f"crash storm {storm_s:g} s: daemon CPU", "ours", "% core", [cpu_share * 100]),
        row(BENCH, "crash storm: spawns per second", "ours", "1/s", [spawns_per_s]),
        row(BENCH, "crash storm: daemon CPU per spawn", "ours", "ms", [cpu_per_spawn_ms]),
        row(BENCH, f"daemon CPU per spawn, each of {storms} storms", "ours", "ms", per_spawn),
        row(
            BENCH,
            f"RSS growth per storm, storms 2..{storms}",
            "ours",
            "MiB",
            [(b.rss_kib - a.rss_kib) / 1024 for a, b in itertools.pairwise(calms)] or [0.0],
        ),
        row(BENCH, "crash storm: daemon fds (1 s samples)", "ours", "count", fds),
        *rows_before_after(calm_before, storm_start, storm_end, calm_after),
        row(
            BENCH, "daemon fds, calm after the last storm", "ours", "count", [calm_after_second.fds]
        ),
        row(
            BENCH,
            "daemon RSS, calm after the last storm",
            "ours",
            "MiB",
            [calm_after_second.rss_kib / 1024],
        ),
    ]
    checks = [
        at_most(BENCH, f"all {count} ready", ready_s, ALL_READY_S, "s"),
        at_most(BENCH, "crash-storm daemon CPU", cpu_share * 100, CPU_SHARE * 100, "% core"),
        at_most(BENCH, "fd growth, calm after vs before", calm_after.fds - calm_before.fds, 0, ""),
        at_most(
            BENCH,
            "fd growth, after the last storm vs before",
            calm_after_second.fds - calm_before.fds,
            0,
            "",
        ),
        at_most(
            BENCH,
            "RSS growth, last storm vs the one before",
            (calms[-1].rss_kib - calms[-2].rss_kib) / 1024 if len(calms) > 1 else 0.0,
            RSS_SLACK_MIB,
            "MiB",
        ),
        at_most(
            BENCH,
            "daemon CPU per spawn, median of the storms",
            statistics.median(per_spawn),
            CPU_PER_SPAWN_MS,
            "ms",
        ),
    ]
    notes.append(
        "each calm, in order: RSS MiB / live threads: "
        + ", ".join(f"{c.rss_kib / 1024:.2f} / {c.threads}" for c in [calm_before, *calms])
    )
    notes.append(
        f"{count} sidecars, each `--crash-after {CRASH_AFTER_S:g}`; restart_budget_exhausted "
        f"logged {exhausted} times; all ready = JSON timestamp of the last `sidecar_ready` - "
        f"daemon spawn ({ns_to_ms(arrival_ns(last) - stamp_ns(last)):.1f} ms before it reached us)"
    )
    return rows, checks, notes


def rows_before_after(*stats: ProcStats) -> list[Row]:
    labels = ("calm before", "storm start", "storm end", "calm after")
    out = []
    for label, s in zip(labels, stats, strict=True):
        out.append(row(BENCH, f"daemon fds, {label}", "ours", "count", [s.fds]))
    for label, s in zip(labels, stats, strict=True):
        out.append(row(BENCH, f"daemon RSS, {label}", "ours", "MiB", [s.rss_kib / 1024]))
    return out


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--sidecars", type=int, default=50)
    parser.add_argument("--storm-s", type=float, default=30.0, help="crash-storm length")
    parser.add_argument("--storms", type=int, default=2, help="crash storms in a row (>= 2)")
    parser.add_argument(
        "--isolation",
        choices=("auto", "cgroup", "none"),
        default="auto",
        help="the daemon's [supervisor] isolation (a cgroup per sidecar, or none)",
    )
    args = parser.parse_args(argv)
    rows, checks, notes = run(args.sidecars, args.storm_s, max(args.storms, 2), args.isolation)
    report(f"{args.sidecars} sidecars; {machine()}", rows, checks, notes)
    return 0
