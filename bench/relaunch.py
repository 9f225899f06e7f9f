"""Relaunch over an orphan: the app crashed, its sidecar's orphan holds the port, the app starts
`supervisor run` again. From the exec of the new daemon to the orphan reclaimed (`orphan_killed`,
or `cgroup_leftovers_killed` with a cgroup per sidecar), `sidecar_spawned`, the new child
listening and `sidecar_ready`.

`python -m bench relaunch [--samples N] [--editable] [--isolation auto|cgroup|none]`. Each
sample: a daemon starts the demo sidecar (tcp probe) and is SIGKILLed once it is ready; its
child lives on, holding the port (reparented to the bench, a subreaper, which reaps it when it is
killed). Then, in the same run, interleaved so that load hits each alike:

- ours: `supervisor run` on the same config and state dir (a regular install, as `coldstart`);
- script: the original design by hand, a bash script: `lsof -t -iTCP:P -sTCP:LISTEN`, `ps` to
  check the command, `kill`, wait until the port refuses, spawn the child, probe until it accepts
  (`sleep 0.001` between polls; the probes are bash's /dev/tcp, no process per probe);
- child alone: the same demo child spawned on a free port, exec -> listening: the floor;
- supervisord 4.x, where installed: exec -> its child listening, on a free port (it has no way
  to reclaim a held port: its child would fail to bind and crash-loop);
- PM2, where `pm2` is on PATH (not installed by the bench).

"listening" is the child's own `--report` instant for every system; "ready" is ours
`sidecar_ready` timestamp, the script's `$EPOCHREALTIME` once its probe connected, and for the
child alone and supervisord the bench's own connect() poll (0.5 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.coldstart import console_script_of, installed_python
from bench.common import (
    PYTHON,
    ROOT,
    Check,
    Program,
    Row,
    Supervisord,
    at_most,
    demo,
    free_port,
    machine,
    ns_to_ms,
    render_config,
    report,
    row,
    scratch,
    sidecar,
    stamp_ns,
    supervisord_bin,
    wait_connect,
    wait_exited,
    wait_report,
)
from tests.support import Daemon, Event

BENCH = "relaunch"
READY_OVER_CHILD_MS = 60.0
PR_SET_CHILD_SUBREAPER = 36
LISTENING = "exec -> child listening"
READY = "exec -> ready"

SCRIPT = r"""
port=$1; shift
for pid in $(lsof -t -iTCP:"$port" -sTCP:LISTEN); do
  # Only a leftover of our own app is killed: its command line says so.
  if ps -o command= -p "$pid" | grep -q demo.py; then kill "$pid"; fi
done
while (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.001; done
"$@" </dev/null >/dev/null 2>&1 &
until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.001; done
echo "ready $EPOCHREALTIME"
"""


@dataclass(frozen=True)
class Ours:
    started: float
    killed: float
    spawned: float
    listening: float
    ready: float


def become_subreaper() -> None:
    """Orphans come to us (and are reaped by us), not to whatever pid 1 is."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_when_gone(pid: int) -> threading.Thread:
    """A thread that reaps `pid` (an orphan reparented to us) as soon as it exits."""

    def reap() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    thread = threading.Thread(target=reap, daemon=True)
    thread.start()
    return thread


def kill_pid(pid: int) -> None:
    """SIGKILL a child the bench owns (through a pidfd: never a recycled pid)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        os.close(fd)


class Orphan:
    """A daemon started on `config`, ready, then SIGKILLed: its child holds `port`."""

    def __init__(self, config: Path, state: Path, command: Sequence[str]) -> None:
        first = Daemon(config, state, "--non-interactive", log_level="info", command=command)
        try:
            self.pid = int(first.wait_for("sidecar_ready", timeout=30)["pid"])
        finally:
            first.kill()
        self.reaper = reap_when_gone(self.pid)
        # With a cgroup per sidecar, the cgroup its killed daemon made (the next daemon on this
        # state dir removes it at a clean stop; the script, or an early failure, does not).
        self.cgroups = [Path(str(e["path"])) for e in first.find("cgroup_created")]

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            fd = os.pidfd_open(self.pid)
            try:
                if self.reaper.is_alive():  # not reaped yet: the pidfd names the orphan
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
        self.reaper.join(10)
        for cgroup in self.cgroups:  # the sidecar's, then our folder: each only once empty
            for path in (cgroup, cgroup.parent):
                with contextlib.suppress(OSError):  # gone already, or not empty yet
                    path.rmdir()


def write_config(work: Path, port: int, report_file: Path, isolation: str) -> Path:
    config = work / "supervisor.toml"
    entry = sidecar("demo", port, "--report", str(report_file))
    config.write_text(render_config([entry], {"isolation": isolation}))
    return config


def reclaimed(daemon: Daemon, orphan: Orphan) -> Event:
    """The event that reclaimed the orphan: `orphan_killed` naming it (the evidence path), or,
    with a cgroup per sidecar, `cgroup_leftovers_killed` of its sidecar's cgroup (the kernel
    says it is ours; the event names no pid, so the orphan must be gone by then)."""
    for event in daemon.find("orphan_killed"):
        if int(event["pid"]) != orphan.pid:
            raise RuntimeError(f"killed {event['pid']}, not the orphan {orphan.pid}")
        return event
    for event in daemon.find("cgroup_leftovers_killed", sidecar="demo"):
        orphan.reaper.join(5.0)
        if orphan.reaper.is_alive():
            raise RuntimeError(f"the cgroup was emptied but the orphan {orphan.pid} is alive")
        return event
    raise RuntimeError("the sidecar got ready without reclaiming the orphan")


def one_ours(command: Sequence[str], isolation: str) -> Ours:
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        config = write_config(work, port, report_file, isolation)
        orphan = Orphan(config, work / "state", command)
        try:
            with Daemon(
                config, work / "state", "--non-interactive", log_level="info", command=command
            ) as daemon:
                ready = daemon.wait_for("sidecar_ready", timeout=30)
                killed = reclaimed(daemon, orphan)
                started = daemon.wait_for("daemon_started")
                spawned = daemon.wait_for("sidecar_spawned")
                _, listened = wait_report(report_file, 2, 5.0)
                exec_ns = daemon.started_ns
                return Ours(
                    ns_to_ms(stamp_ns(started) - exec_ns),
                    ns_to_ms(stamp_ns(killed) - exec_ns),
                    ns_to_ms(stamp_ns(spawned) - exec_ns),
                    ns_to_ms(listened - exec_ns),
                    ns_to_ms(stamp_ns(ready) - exec_ns),
                )
        finally:
            orphan.close()


def one_script(command: Sequence[str], isolation: str) -> tuple[float, float]:
    """The script by hand: exec -> the new child listening, exec -> the script's probe."""
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        config = write_config(work, port, report_file, isolation)
        orphan = Orphan(config, work / "state", command)
        child = None
        try:
            exec_ns = time.time_ns()
            done = subprocess.run(
                [
                    "bash",
                    "-c",
                    SCRIPT,
                    "relaunch",
                    str(port),
                    *demo(port, "--report", str(report_file)),
                ],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
                cwd=ROOT,
            )
            child, listened = wait_report(report_file, 2, 5.0)
            ready_ns = int(done.stdout.split()[-1].replace(".", "")) * 1000
            orphan.reaper.join(5)
            if orphan.reaper.is_alive():
                raise RuntimeError(f"the script left the orphan {orphan.pid} alive")
            return ns_to_ms(listened - exec_ns), ns_to_ms(ready_ns - exec_ns)
        finally:
            orphan.close()
            if child is not None:
                kill_pid(child)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child, 0)  # the script's child is reparented to us


def one_direct() -> tuple[float, float]:
    """The demo child alone: exec -> listening, exec -> the bench's connect() succeeds."""
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        started = time.time_ns()
        child = subprocess.Popen(
            demo(port, "--report", str(report_file)), cwd=ROOT, stdout=subprocess.DEVNULL
        )
        try:
            accepted = wait_connect(port, 10.0)
            _, listened = wait_report(report_file, 1, 10.0)
        finally:
            child.terminate()
            wait_exited(child, 10.0)
        return ns_to_ms(listened - started), ns_to_ms(accepted - started)


def one_supervisord(binary: Path) -> tuple[float, float]:
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        started = time.time_ns()
        program = Program("demo", demo(port, "--report", str(report_file)))
        with Supervisord(binary, work, [program]):
            accepted = wait_connect(port, 30.0)
            _, listened = wait_report(report_file, 1, 10.0)
        return ns_to_ms(listened - started), ns_to_ms(accepted - started)


def one_pm2(pm2: str) -> tuple[float, float]:
    """PM2 (a daemon of its own, started by the first `pm2 start`): exec -> listening."""
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        env = {**os.environ, "PM2_HOME": str(work / "pm2")}
        argv = demo(port, "--report", str(report_file))
        started = time.time_ns()
        subprocess.run(
            [pm2, "start", argv[0], "--name", "demo", "--no-autorestart", "--", *argv[1:]],
            env=env,
            capture_output=True,
            check=True,
            timeout=60,
            cwd=ROOT,
        )
        try:
            accepted = wait_connect(port, 30.0)
            _, listened = wait_report(report_file, 1, 10.0)
        finally:
            subprocess.run([pm2, "kill"], env=env, capture_output=True, check=False, timeout=60)
        return ns_to_ms(listened - started), ns_to_ms(accepted - started)


def run(samples: int, editable: bool, isolation: str) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    become_subreaper()
    python = PYTHON if editable else installed_python(notes)
    command = console_script_of(python) if not editable else [PYTHON, "-m", "supervisor"]
    binary = supervisord_bin(notes)
    pm2 = shutil.which("pm2")
    if pm2 is None:
        notes.append("PM2 skipped: no `pm2` on PATH")
    have_lsof = shutil.which("lsof") is not None and shutil.which("ps") is not None
    if not have_lsof:
        notes.append("script skipped: no lsof or ps")
    notes.append(f'ours with isolation = "{isolation}"')
    one_ours(command, isolation)  # unmeasured: warms the page cache
    ours: list[Ours] = []
    script: list[tuple[float, float]] = []
    direct: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    pm2s: list[tuple[float, float]] = []
    for _ in range(samples):
        ours.append(one_ours(command, isolation))
        if have_lsof:
            script.append(one_script(command, isolation))
        direct.append(one_direct())
        if binary is not None:
            theirs.append(one_supervisord(binary))
        if pm2 is not None:
            pm2s.append(one_pm2(pm2))
    rows = [
        row(BENCH, "exec -> daemon_started", "ours", "ms", [s.started for s in ours]),
        row(BENCH, "exec -> orphan reclaimed", "ours", "ms", [s.killed for s in ours]),
        row(BENCH, "exec -> sidecar_spawned", "ours", "ms", [s.spawned for s in ours]),
    ]
    peers = (("script", script), ("child alone", direct), ("supervisord", theirs), ("pm2", pm2s))
    for index, measure in enumerate((LISTENING, READY)):
        mine = [s.listening for s in ours] if measure == LISTENING else [s.ready for s in ours]
        rows.append(row(BENCH, measure, "ours", "ms", mine))
        rows += [
            row(BENCH, measure, system, "ms", [p[index] for p in pairs])
            for system, pairs in peers
            if pairs
        ]
    # Pairs of one round (interleaved): the load of the moment hits both members alike.
    rows.append(
        row(
            BENCH,
            "ready minus the child alone (pairs)",
            "ours",
            "ms",
            [s.ready - d[0] for s, d in zip(ours, direct, strict=True)],
        )
    )
    if script:
        rows.append(
            row(
                BENCH,
                "ready / the script's ready (pairs)",
                "ours",
                "x",
                [s.ready / p[1] for s, p in zip(ours, script, strict=True)],
            )
        )
    by = {(r.measure, r.system): r.median for r in rows}
    child = by[(LISTENING, "child alone")]
    checks = [
        at_most(
            BENCH,
            f"ours exec -> ready vs the child alone {child:.1f} ms + {READY_OVER_CHILD_MS:g}",
            by[(READY, "ours")],
            child + READY_OVER_CHILD_MS,
            "ms",
        )
    ]
    if script:
        checks.append(
            at_most(
                BENCH,
                "ours exec -> ready vs the script's",
                by[(READY, "ours")],
                by[(READY, "script")],
                "ms",
            )
        )
    notes.append(
        "ours and script: over an orphan holding the port (a SIGKILLed daemon's child); child "
        "alone, supervisord and PM2: on a free port (none of them reclaims a held port)"
    )
    notes.append(f"x ours: each row's median / ours median of the same measure; n = {samples}")
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench relaunch", description=__doc__)
    parser.add_argument("--samples", type=int, default=15, help="relaunches per system (>= 5)")
    parser.add_argument(
        "--editable", action="store_true", help="run this venv's (editable) install instead"
    )
    parser.add_argument(
        "--isolation",
        choices=("auto", "cgroup", "none"),
        default="auto",
        help="the daemon's [supervisor] isolation (a cgroup per sidecar, or none)",
    )
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.samples, 5), args.editable, args.isolation)
    report(f"relaunch over an orphan; {machine()}", rows, checks, notes)
    return 0
