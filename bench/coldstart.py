"""Cold start: from `exec` of `supervisor run` to the first spawn and to the sidecar's readiness.

`python -m bench coldstart [--samples N] [--editable]`. Each sample is a fresh daemon on a fresh
state dir running one demo sidecar (tcp probe); the exec instant is taken just before `Popen`,
the daemon's instants are the `timestamp`s of its `daemon_started`, `sidecar_spawned` and
`sidecar_ready` lines, and the arrival of READY=1 on a NOTIFY_SOCKET the bench listens on.
Side by side, in the same run:

- the same demo child spawned directly, exec -> listening (its `--report` line): the child's own
  start-up, which no supervisor can beat;
- supervisord 4.x, exec -> its child's creation (psutil `create_time`: 10 ms resolution);
- a bare `python -c pass` of the same interpreter, exec -> exited (interleaved with the samples:
  the floor the issue-30 target is set against, 5x);
- the floor of the daemon's own stack: the same interpreter importing anyio and structlog (every
  lifecycle step runs in anyio, every event goes through structlog) and starting an empty
  `anyio.run`, exec -> the first instant its task runs. No spawn made in the lifecycle can come
  sooner, whatever our own code costs;
- `supervisor status --json` against a running daemon, and a bare `python -c pass`;
- the import time of `supervisor.daemon` (`python -X importtime`, cumulative): a regression shows.

Our daemon runs from a regular (non-editable) install in a venv under the bench cache dir,
reinstalled from this checkout at every run: what pipx or a wheel gives a user. An editable
install adds its import hook to every start-up (~10-100 ms); `--editable` measures that instead.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench.cli import wall_ms
from bench.common import (
    PYTHON,
    ROOT,
    Check,
    Program,
    Row,
    Supervisord,
    at_most,
    cache_dir,
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
from tests.support import Daemon

BENCH = "coldstart"
FIRST_SPAWN_MS = 120.0
FIRST_SPAWN_OVER_PASS = 5.0  # exec -> first spawn <= 5x `python -c pass` (issue 30)
READY_OVER_CHILD_MS = 130.0
STATUS_MS = 80.0


def installed_python(notes: list[str]) -> str:
    """The interpreter of a venv holding a regular install of this checkout (made on first use)."""
    venv = cache_dir() / "coldstart"
    python = venv / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    # This checkout's code, whatever was installed before (the dependencies stay).
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    notes.append(f"ours: a regular install of this checkout in {venv}")
    return str(python)


def console_script_of(python: str) -> list[str]:
    return [str(Path(python).parent / "supervisor")]


class NotifyListener:
    """A NOTIFY_SOCKET for the daemon: the instant READY=1 arrives (a reader thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.ready_ns: int | None = None
        self._got = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if b"READY=1" in data.split(b"\n"):
                self.ready_ns = time.time_ns()
                self._got.set()
                return

    def wait(self, timeout_s: float) -> int:
        if not self._got.wait(timeout_s) or self.ready_ns is None:
            raise TimeoutError(f"no READY=1 on {self.path} within {timeout_s}s")
        return self.ready_ns

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


def one_ours(command: Sequence[str]) -> tuple[float, float, float, float, float]:
    """exec -> daemon_started, -> sidecar_spawned, -> sidecar_ready, -> READY=1 (arrival);
    spawned -> child listening."""
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        config = work / "supervisor.toml"
        config.write_text(render_config([sidecar("demo", port, "--report", str(report_file))]))
        notify = NotifyListener(work / "notify.sock")
        try:
            daemon = Daemon(
                config,
                work / "state",
                "--non-interactive",
                log_level="info",
                command=command,
                env={"NOTIFY_SOCKET": str(notify.path)},
            )
            with daemon:
                ready = daemon.wait_for("sidecar_ready", timeout=30)
                started = daemon.wait_for("daemon_started")
                spawned = daemon.wait_for("sidecar_spawned")
                _, listened = wait_report(report_file, 1, 5.0)
                notified = notify.wait(30.0)
                exec_ns = daemon.started_ns
                return (
                    ns_to_ms(stamp_ns(started) - exec_ns),
                    ns_to_ms(stamp_ns(spawned) - exec_ns),
                    ns_to_ms(stamp_ns(ready) - exec_ns),
                    ns_to_ms(notified - exec_ns),
                    ns_to_ms(listened - stamp_ns(spawned)),
                )
        finally:
            notify.close()


def one_direct() -> float:
    """The demo child alone: exec -> listening."""
    port = free_port()
    with scratch(BENCH) as work:
        report_file = work / "report"
        started = time.time_ns()
        child = subprocess.Popen(
            demo(port, "--report", str(report_file)), cwd=ROOT, stdout=subprocess.DEVNULL
        )
        try:
            _, listened = wait_report(report_file, 1, 10.0)
        finally:
            child.terminate()
            wait_exited(child, 10.0)
        return ns_to_ms(listened - started)


def one_pass(python: str) -> float:
    """`python -c pass` of the same interpreter: exec -> exited (a pidfd notices the exit)."""
    started = time.time_ns()
    proc = subprocess.Popen([python, "-c", "pass"], cwd=ROOT)
    wait_exited(proc, 30.0)
    return ns_to_ms(time.time_ns() - started)


STACK_FLOOR = """\
import time
import anyio
import structlog

async def first() -> None:
    print(time.time_ns(), flush=True)

anyio.run(first)
"""


def one_stack_floor(python: str) -> float:
    """anyio and structlog imported, an empty `anyio.run`: exec -> its task's first instant."""
    started = time.time_ns()
    done = subprocess.run(
        [python, "-c", STACK_FLOOR], cwd="/", capture_output=True, text=True, check=True
    )
    return ns_to_ms(int(done.stdout) - started)


def one_supervisord(binary: Path) -> float:
    """supervisord: exec -> its first child's creation (10 ms resolution)."""
    port = free_port()
    with scratch(BENCH) as work:
        started = time.time()
        with Supervisord(binary, work, [Program("demo", demo(port))]) as sd:
            wait_connect(port, 30.0)
            child = psutil.Process(sd.pid).children()[0]
            return (child.create_time() - started) * 1000


def import_ms(python: str, module: str) -> float:
    """The cumulative import time of `module` (us -> ms) in one `python -X importtime` run."""
    done = subprocess.run(
        [python, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)$", line)
        if match and match.group(2) == module:
            return int(match.group(1)) / 1000
    raise RuntimeError(f"no import time for {module} in: {done.stderr[-500:]}")


def run(samples: int, editable: bool) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    python = PYTHON if editable else installed_python(notes)
    command = console_script_of(python)
    ours: list[tuple[float, float, float, float, float]] = []
    direct: list[float] = []
    theirs: list[float] = []
    bare: list[float] = []
    stack: list[float] = []
    binary = supervisord_bin(notes)
    one_ours(command)  # unmeasured: warms the page cache
    one_direct()
    one_pass(python)
    one_stack_floor(python)
    for _ in range(samples):
        ours.append(one_ours(command))
        direct.append(one_direct())
        bare.append(one_pass(python))
        stack.append(one_stack_floor(python))
        if binary is not None:
            theirs.append(one_supervisord(binary))
    rows = [
        row(BENCH, "exec -> daemon_started", "ours", "ms", [s[0] for s in ours]),
        row(BENCH, "exec -> first spawn", "ours", "ms", [s[1] for s in ours]),
        row(BENCH, "exec -> sidecar_ready", "ours", "ms", [s[2] for s in ours]),
        row(BENCH, "exec -> READY=1 (arrival)", "ours", "ms", [s[3] for s in ours]),
        row(BENCH, "spawned -> listening (child start-up)", "ours", "ms", [s[4] for s in ours]),
        row(BENCH, "exec -> listening, child alone", "direct", "ms", direct),
        row(BENCH, "exec -> exited, python -c pass", "bare python", "ms", bare),
        row(
            BENCH,
            "exec -> first spawn / python -c pass (pairs)",
            "ours",
            "x",
            [s[1] / b for s, b in zip(ours, bare, strict=True)],
        ),
        row(BENCH, "exec -> first task, anyio + structlog", "stack floor", "ms", stack),
        row(
            BENCH,
            "exec -> first task, anyio + structlog / python -c pass (pairs)",
            "stack floor",
            "x",
            [f / b for f, b in zip(stack, bare, strict=True)],
        ),
    ]
    if theirs:
        rows.append(row(BENCH, "exec -> first spawn", "supervisord", "ms", theirs))
    with scratch(BENCH) as work:
        port = free_port()
        config = work / "supervisor.toml"
        config.write_text(render_config([sidecar("demo", port)]))
        with Daemon(config, work / "state", "--non-interactive", command=command) as daemon:
            daemon.wait_for("sidecar_ready", timeout=30)
            status = [*command, "status", "--json", "--state-dir", str(daemon.state_dir)]
            rows.append(
                row(BENCH, "status --json, wall time", "ours", "ms", wall_ms(status, samples))
            )
    rows.append(
        row(
            BENCH,
            "status --json, wall time",
            "bare python",
            "ms",
            wall_ms([python, "-c", "pass"], samples),
        )
    )
    for module in ("supervisor.daemon.main", "supervisor.cli"):
        rows.append(
            row(
                BENCH,
                f"import {module} (cumulative)",
                "ours",
                "ms",
                [import_ms(python, module) for _ in range(5)],
            )
        )
    by = {(r.measure, r.system): r.median for r in rows}
    child = by[("exec -> listening, child alone", "direct")]
    checks = [
        at_most(
            BENCH,
            "exec -> first spawn / python -c pass, medians",
            by[("exec -> first spawn", "ours")]
            / by[("exec -> exited, python -c pass", "bare python")],
            FIRST_SPAWN_OVER_PASS,
            "x",
        ),
        at_most(
            BENCH,
            "exec -> first spawn, median",
            by[("exec -> first spawn", "ours")],
            FIRST_SPAWN_MS,
            "ms",
        ),
        at_most(
            BENCH,
            "exec -> sidecar_ready minus the child alone, median",
            by[("exec -> sidecar_ready", "ours")] - child,
            READY_OVER_CHILD_MS,
            "ms",
        ),
        at_most(
            BENCH,
            "status --json, median",
            by[("status --json, wall time", "ours")],
            STATUS_MS,
            "ms",
        ),
    ]
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench coldstart", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="daemon starts (>= 5)")
    parser.add_argument(
        "--editable", action="store_true", help="run this venv's (editable) install instead"
    )
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.samples, 5), args.editable)
    report(f"cold start; {machine()}", rows, checks, notes)
    return 0
