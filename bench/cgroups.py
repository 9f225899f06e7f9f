"""A cgroup per sidecar: what it costs on the respawn and stop paths, with vs without.

`python -m bench cgroups [--samples N] [--spawn-samples N]` (root, with a writable cgroup2
mount; it says so and measures nothing otherwise). Rows, "ours" = with a cgroup:
- spawn `/bin/true` -> reaped: children.spawn directly vs through the exec shim that joins the
  (reused, existing) cgroup first;
- a `sleep` with 2 setsid'd children: Child.stop (SIGTERM; done when the group, or the cgroup,
  is empty);
- the daemon: SIGKILL the child -> the port accepts again (new pid), `isolation = "cgroup"` vs
  `"none"` (the daemon kills the cgroup's leftovers before each respawn);
- the daemon: SIGTERM -> exited, one sidecar (its stop, the cgroup removed at the end);
- what the join itself costs: one write of a pid to cgroup.procs, back to back vs after 0.5 s
  idle (a migration takes cgroup_threadgroup_rwsem for writing, which waits for an RCU grace
  period unless one was waited for moments ago, or the mount has `favordynmods`).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from bench.common import (
    Daemon,
    Row,
    free_port,
    machine,
    ns_to_ms,
    report,
    row,
    scratch,
    sidecar,
    wait_connect,
)
from bench.respawn import daemon_cycles
from supervisor.system import cgroups, children

BENCH = "cgroups"
SYSTEMS = (("ours", "cgroup"), ("no cgroup", "none"))
TREE = "sleep 60 & sleep 60 & exec sleep 60"  # the children start in the leader's session


def _cgroup(work: Path) -> cgroups.Cgroup:
    isolation = cgroups.Isolation(cgroups.find_subtree(), cgroups.state_id(work))
    cgroup = isolation.sidecar("bench")
    cgroup.ensure()
    return cgroup


def spawn_costs(samples: int, cgroup: cgroups.Cgroup) -> list[Row]:
    env = dict(os.environ)

    def spawn(group: cgroups.Cgroup | None) -> Callable[[], None]:
        def once() -> None:
            child = children.spawn(["/bin/true"], cwd=None, env=env, cgroup=group)
            child.popen.wait()
            child.close()

        return once

    methods = [("ours", spawn(cgroup)), ("no cgroup", spawn(None))]
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    for _ in range(10):
        for _, method in methods:
            method()
    for sample in range(samples):
        order = methods if sample % 2 else methods[::-1]  # interleaved: busy moments hit both
        for name, method in order:
            started = time.perf_counter_ns()
            method()
            times[name].append(ns_to_ms(time.perf_counter_ns() - started))
    return [row(BENCH, "spawn /bin/true -> reaped", n, "ms", times[n]) for n, _ in methods]


def stop_costs(samples: int, cgroup: cgroups.Cgroup) -> list[Row]:
    env = dict(os.environ)
    times: dict[str, list[float]] = {"ours": [], "no cgroup": []}

    async def once(name: str, group: cgroups.Cgroup | None) -> None:
        child = children.spawn(["/bin/sh", "-c", TREE], cwd=None, env=env, cgroup=group)
        try:
            deadline = time.monotonic() + 5
            while len(child.group_members()) < 3 and time.monotonic() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.005)
            started = time.perf_counter_ns()
            await child.stop(signal.SIGTERM, 2.0)
            times[name].append(ns_to_ms(time.perf_counter_ns() - started))
        finally:
            child.close()

    async def measure() -> None:
        for sample in range(samples):
            pairs = [("ours", cgroup), ("no cgroup", None)]
            for name, group in pairs if sample % 2 else pairs[::-1]:
                await once(name, group)

    anyio.run(measure)
    return [row(BENCH, "Child.stop, 3 processes (SIGTERM)", n, "ms", t) for n, t in times.items()]


def join_costs(samples: int, cgroup: cgroups.Cgroup) -> list[Row]:
    times: dict[str, list[float]] = {"back to back": [], "after 0.5 s idle": []}
    for sample in range(2 * samples):
        idle = sample % 2 == 1
        if idle:
            time.sleep(0.5)
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            started = time.perf_counter_ns()
            cgroup.procs_file.write_text(str(sleeper.pid))
            took = ns_to_ms(time.perf_counter_ns() - started)
        finally:
            sleeper.kill()
            sleeper.wait()
        times["after 0.5 s idle" if idle else "back to back"].append(took)
    return [row(BENCH, "write a pid to cgroup.procs", n, "ms", t) for n, t in times.items()]


def daemon_respawn(samples: int, isolation: str) -> list[float]:
    done, _ = daemon_cycles(samples, {"isolation": isolation})
    return [c.respawn_ms for c in done]


def daemon_stop(samples: int, isolation: str) -> list[float]:
    out = []
    for _ in range(samples):
        port = free_port()
        entry = sidecar("demo", port)
        with scratch(BENCH) as work, Daemon(work, [entry], {"isolation": isolation}) as daemon:
            daemon.wait_for("sidecar_ready", timeout=30)
            wait_connect(port, 10.0)
            started = time.perf_counter_ns()
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.proc.wait(30)
            out.append(ns_to_ms(time.perf_counter_ns() - started))
    return out


def run(samples: int, spawn_samples: int) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    with scratch(BENCH) as work:
        cgroup = _cgroup(work)
        try:
            rows = spawn_costs(spawn_samples, cgroup)
            rows += stop_costs(samples, cgroup)
            rows += join_costs(samples, cgroup)
        finally:
            cgroup.kill()
            cgroup.remove()
            cgroups.Isolation(cgroups.find_subtree(), cgroups.state_id(work)).remove_empty()
    for name, isolation in SYSTEMS:
        rows.append(
            row(BENCH, "daemon: SIGKILL child -> port accepts", name, "ms",
                daemon_respawn(samples, isolation))
        )  # fmt: skip
    for name, isolation in SYSTEMS:
        rows.append(
            row(BENCH, "daemon: SIGTERM -> exited (1 sidecar)", name, "ms",
                daemon_stop(max(samples // 2, 5), isolation))
        )  # fmt: skip
    notes.append(
        'ours = with a cgroup per sidecar (isolation = "cgroup"); no cgroup = isolation = "none" '
        f"(the process group only); the cgroups live under {cgroups.find_subtree().base}"
    )
    return rows, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cgroups", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="stops and respawns per system")
    parser.add_argument("--spawn-samples", type=int, default=200, help="spawns per method")
    args = parser.parse_args(argv)
    try:
        cgroups.find_subtree()
    except cgroups.CgroupUnavailable as exc:
        print(f"== cgroups: not measured: {exc.reason}")
        return 0
    rows, notes = run(max(args.samples, 1), max(args.spawn_samples, 1))
    report(f"a cgroup per sidecar: respawn and stop; {machine()}", rows, [], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
