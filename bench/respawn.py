"""Crash to respawn: the bench SIGKILLs the child, then connect()s every 0.5 ms until the port
accepts again, served by a new pid (checked in the demo's `--report` file).

`python -m bench respawn [--samples N]`. Ours (`restart.base_delay = 0`) vs supervisord 4.x
(`startsecs=0`, `autorestart=true`), plus the demo child's own start-to-listen time (the bench
spawns it directly, then polls connect() the same way): the floor any supervisor pays.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
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
    kill_and_wait,
    machine,
    ns_to_ms,
    ratio_at_least,
    report,
    respawning,
    row,
    scratch,
    stamp_ns,
    supervisord_bin,
    wait_connect,
    wait_report,
)

BENCH = "respawn"
MIN_RATIO = 20.0
SLACK_MS = 15.0
MEASURE = "SIGKILL child -> port accepts (new pid)"


@dataclass(frozen=True)
class Cycle:
    killed_ns: int
    accepted_ns: int
    listened_ns: int  # the successor's own `--report` instant

    @property
    def respawn_ms(self) -> float:
        return ns_to_ms(self.accepted_ns - self.killed_ns)


def cycles(
    port: int, listen_report: Path, samples: int, steady: Callable[[int], object]
) -> list[Cycle]:
    """Kill the serving child `samples` times, timing each kill and the successor's first accept.

    `steady(n)` returns once launch n (1-based) is fully up, so no kill lands mid-start.
    """
    out = []
    for n in range(1, samples + 1):
        steady(n)
        pid, _ = wait_report(listen_report, n, 10.0)
        time.sleep(SETTLE_S)
        killed_ns = kill_and_wait(pid)
        accepted_ns = wait_connect(port, 10.0)
        successor, listened_ns = wait_report(listen_report, n + 1, 10.0)
        if successor == pid:
            raise RuntimeError(f"port {port} accepted, but no new child replaced pid {pid}")
        out.append(Cycle(killed_ns, accepted_ns, listened_ns))
    return out


def breakdown(done: Sequence[Cycle], spawned_ns: Sequence[int]) -> tuple[list[float], list[float]]:
    """Where each respawn went (ms): SIGKILL -> `sidecar_spawned` (the daemon's reaction), and
    `sidecar_spawned` -> listening (the new child's own start); `spawned_ns`: each successor's."""
    reacted = [ns_to_ms(s - c.killed_ns) for c, s in zip(done, spawned_ns, strict=True)]
    started = [ns_to_ms(c.listened_ns - s) for c, s in zip(done, spawned_ns, strict=True)]
    return reacted, started


def daemon_cycles(
    samples: int, supervisor: Mapping[str, object] | None = None
) -> tuple[list[Cycle], list[int]]:
    """`cycles` of our daemon's demo sidecar, restarted at once, and each successor's
    `sidecar_spawned` instant (time_ns)."""
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        with Daemon(work, [respawning("demo", port, listen_report)], supervisor) as daemon:
            done = cycles(
                port, listen_report, samples, lambda n: daemon.wait_for("sidecar_ready", count=n)
            )
            spawned = [daemon.wait_for("sidecar_spawned", count=n + 2) for n in range(samples)]
    return done, [stamp_ns(s) for s in spawned]


def ours(samples: int) -> list[Row]:
    """The respawn figure, and where it goes: kill -> `sidecar_spawned` -> child listening."""
    done, spawned_ns = daemon_cycles(samples)
    reacted, started = breakdown(done, spawned_ns)
    return [
        row(BENCH, MEASURE, "ours", "ms", [c.respawn_ms for c in done]),
        row(BENCH, "  of which SIGKILL -> sidecar_spawned", "ours", "ms", reacted),
        row(BENCH, "  of which sidecar_spawned -> listening", "ours", "ms", started),
    ]


def supervisord(binary: Path, samples: int) -> list[float]:
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        program = Program("demo", demo(port, "--report", str(listen_report)))
        with Supervisord(binary, work, [program]):
            done = cycles(port, listen_report, samples, lambda n: None)
    return [c.respawn_ms for c in done]


def child_start(samples: int) -> list[float]:
    """The demo child's own spawn -> port accepts, spawned by the bench itself."""
    out = []
    port = free_port()
    for _ in range(samples):
        started_ns = time.time_ns()
        child = subprocess.Popen(
            demo(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out.append(ns_to_ms(wait_connect(port, 10.0) - started_ns))
        finally:
            child.kill()
            child.wait(10)
        time.sleep(SETTLE_S)
    return out


def run(samples: int) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    binary = supervisord_bin(notes)
    start = row(
        BENCH, "spawn -> port accepts (demo child alone)", "demo child", "ms", child_start(samples)
    )
    mine, *breakdown = ours(samples)
    rows = [mine, start, *breakdown]
    checks = [
        at_most(
            BENCH,
            f"ours median vs child start-to-listen {start.median:.1f} ms + {SLACK_MS:g}",
            mine.median,
            start.median + SLACK_MS,
            "ms",
        )
    ]
    if binary is not None:
        theirs = row(BENCH, MEASURE, "supervisord", "ms", supervisord(binary, samples))
        rows.insert(1, theirs)
        checks.append(
            ratio_at_least(
                BENCH, "supervisord median / ours median", theirs.median, mine.median, MIN_RATIO
            )
        )
        overhead_ours = mine.median - start.median
        overhead_theirs = theirs.median - start.median
        notes.append(
            f"overhead beyond the child's own start (median - {start.median:.1f} ms): ours "
            f"{overhead_ours:.1f} ms, supervisord {overhead_theirs:.1f} ms"
        )
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench respawn", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="crashes per system (>= 20)")
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.samples, 20))
    report(f"crash to respawn; {machine()}", rows, checks, notes)
    return 0
