"""Connections during crash-restarts: a client connects every millisecond (and sends GET /health on
each connection) while the bench SIGKILLs the serving child, N times (default 20).

`python -m bench handoff [--crashes N] [--interval-ms MS] [--spawn-samples N]`. Systems: ours with
`socket.inherit = true`, ours without it, supervisord 4.x (`startsecs=0`, `autorestart=true`); all
restart at once (`restart.base_delay = 0`). Per crash: connections refused (ECONNREFUSED), the
time from the SIGKILL to the first 200 answer to a connection made after it, and connections lost
otherwise (reset or closed: those the dying child had accepted).

Also the cost of each way to hand the socket over as fd 3 on the respawn path: spawn `/bin/true`
and reap it, directly, through our /bin/sh exec shim, with posix_spawn file actions, with
subprocess's preexec_fn.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import selectors
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
    report,
    respawning,
    row,
    scratch,
    stamp_ns,
    supervisord_bin,
    wait_report,
)
from supervisor.system import children, execshim

BENCH = "handoff"
REQUEST_TIMEOUT_S = 10.0
REQUEST = b"GET /health HTTP/1.0\r\nHost: bench\r\n\r\n"
REFUSED = "refused"
OK = "200"
CUT = "cut"


@dataclass(frozen=True)
class Outcome:
    started_ns: int  # time.time_ns() before connect()
    ended_ns: int
    result: str  # "200", "refused", "reset", "closed", "timeout", "cut", or an errno name


class _Pending:
    def __init__(self, sock: socket.socket, started_ns: int) -> None:
        self.sock = sock
        self.started_ns = started_ns
        self.connected = False
        self.answer = b""


class Client(threading.Thread):
    """Opens a connection every `interval_s` (non-blocking, many in flight), sends GET /health on
    each, and records how each one ended."""

    def __init__(self, port: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval_s = interval_s
        self.outcomes: list[Outcome] = []
        self.latest_ok_started_ns = 0  # the newest connection answered 200 was opened then
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._selector = selectors.DefaultSelector()

    def results(self) -> list[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def stop(self) -> None:
        self._done.set()
        self.join(REQUEST_TIMEOUT_S + 5)

    def _record(self, pending: _Pending, result: str) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(pending.sock)
        pending.sock.close()
        with self._lock:
            self.outcomes.append(Outcome(pending.started_ns, time.time_ns(), result))
            if result == OK:
                self.latest_ok_started_ns = max(self.latest_ok_started_ns, pending.started_ns)

    def _open(self) -> None:
        started = time.time_ns()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        pending = _Pending(sock, started)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            self._record(pending, REFUSED if code == errno.ECONNREFUSED else errno.errorcode[code])
            return
        self._selector.register(sock, selectors.EVENT_WRITE, pending)

    def _step(self, pending: _Pending, events: int) -> None:
        sock = pending.sock
        if not pending.connected:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._record(pending, REFUSED if code == errno.ECONNREFUSED else str(code))
                return
            pending.connected = True
            try:
                sock.send(REQUEST)
            except OSError:
                self._record(pending, "reset")
                return
            self._selector.modify(sock, selectors.EVENT_READ, pending)
            return
        if events & selectors.EVENT_READ:
            try:
                chunk = sock.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                self._record(pending, "reset")
                return
            pending.answer += chunk
            if b"\r\n" in pending.answer:
                status = pending.answer.split(b" ", 2)[1:2]
                self._record(pending, status[0].decode() if status else "garbled")
            elif not chunk:
                self._record(pending, "closed")

    def run(self) -> None:
        next_open = time.monotonic()
        while not self._done.is_set():
            now = time.monotonic()
            if now >= next_open:
                self._open()
                next_open += self.interval_s
                if next_open < now:  # fell behind (a busy machine): no burst to catch up
                    next_open = now + self.interval_s
            for key, events in self._selector.select(max(0.0, next_open - time.monotonic())):
                self._step(key.data, events)
            self._expire()
        for key in list(self._selector.get_map().values()):
            self._record(key.data, CUT)  # still in flight when the run ended: not a failure
        self._selector.close()

    def _expire(self) -> None:
        limit = time.time_ns() - int(REQUEST_TIMEOUT_S * 1e9)
        for key in list(self._selector.get_map().values()):
            if key.data.started_ns < limit:
                self._record(key.data, "timeout")


def wait_answered(client: Client, since_ns: int, timeout_s: float) -> None:
    """Until a connection opened after `since_ns` got its 200 (polled every millisecond)."""
    deadline = time.monotonic() + timeout_s
    while client.latest_ok_started_ns < since_ns:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no 200 answer within {timeout_s}s of the crash")
        time.sleep(0.001)


@dataclass(frozen=True)
class Crash:
    killed_ns: int
    refused: int
    lost: int  # reset, closed, timeout
    first_ok_ms: float
    listened_ms: float  # SIGKILL -> the successor's own `--report` instant


@dataclass(frozen=True)
class Run:
    crashes: list[Crash]
    outcomes: list[Outcome]
    spawned_ms: list[float]  # SIGKILL -> `sidecar_spawned` (ours only)


def crash_loop(
    port: int, listen_report: Path, crashes: int, interval_s: float, steady: Callable[[int], object]
) -> tuple[list[Crash], list[Outcome]]:
    """SIGKILL the serving child `crashes` times under a running client; per-crash figures and
    every connection's outcome."""
    client = Client(port, interval_s)
    killed: list[int] = []
    listened: list[int] = []
    try:
        steady(1)
        wait_report(listen_report, 1, 10.0)
        client.start()
        for n in range(1, crashes + 1):
            pid, _ = wait_report(listen_report, n, 10.0)
            steady(n)
            time.sleep(SETTLE_S)
            killed.append(kill_and_wait(pid))
            listened.append(wait_report(listen_report, n + 1, 10.0)[1])
            wait_answered(client, killed[-1], REQUEST_TIMEOUT_S)
        steady(crashes + 1)
        time.sleep(SETTLE_S)
    finally:
        client.stop()
    outcomes = client.results()
    out = []
    for index, killed_ns in enumerate(killed):
        until = killed[index + 1] if index + 1 < len(killed) else time.time_ns()
        after = [o for o in outcomes if killed_ns <= o.started_ns < until]
        answered = [o.ended_ns for o in after if o.result == OK]
        if not answered:
            kinds = Counter(o.result for o in after)
            raise RuntimeError(f"no 200 answer after crash {index + 1}: {kinds}")
        # Failures noticed after this kill: mostly connections the dying child had accepted.
        failed = [o for o in outcomes if killed_ns <= o.ended_ns < until]
        out.append(
            Crash(
                killed_ns=killed_ns,
                refused=sum(o.result == REFUSED for o in after),
                lost=sum(o.result not in (OK, REFUSED, CUT) for o in failed),
                first_ok_ms=ns_to_ms(min(answered) - killed_ns),
                listened_ms=ns_to_ms(listened[index] - killed_ns),
            )
        )
    return out, outcomes


def ours(inherit: bool, crashes: int, interval_s: float) -> Run:
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        tables: dict[str, dict[str, object]] = {"ready": {"probe": "http", "path": "/health"}}
        if inherit:
            tables["socket"] = {"inherit": True}
        entry = respawning("demo", port, listen_report, **tables)
        with Daemon(work, [entry]) as daemon:
            done, outcomes = crash_loop(
                port,
                listen_report,
                crashes,
                interval_s,
                lambda n: daemon.wait_for("sidecar_ready", count=n),
            )
            spawned = [daemon.wait_for("sidecar_spawned", count=n + 2) for n in range(crashes)]
    reacted = [ns_to_ms(stamp_ns(s) - c.killed_ns) for c, s in zip(done, spawned, strict=True)]
    return Run(done, outcomes, reacted)


def supervisord(binary: Path, crashes: int, interval_s: float) -> Run:
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        program = Program("demo", demo(port, "--report", str(listen_report)))
        with Supervisord(binary, work, [program]):
            done, outcomes = crash_loop(port, listen_report, crashes, interval_s, lambda n: None)
    return Run(done, outcomes, [])


# -- the cost of handing the socket over as fd 3 ---------------------------------------------


def _reap(popen: subprocess.Popen[bytes]) -> None:
    popen.wait()
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            stream.close()


def spawn_costs(samples: int) -> list[Row]:
    """spawn `/bin/true` -> reaped, per method (ms). Every method starts a new session with
    stdout/stderr piped, as a sidecar spawn does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    fd = listener.fileno()
    env = dict(os.environ)
    true = ["/bin/true"]

    def direct() -> None:
        child = children.spawn(true, cwd=None, env=env)
        _reap(child.popen)
        child.close()

    def shim() -> None:
        child = children.spawn(true, cwd=None, env={**env, "LISTEN_FDS": "1"}, listen_fd=fd)
        _reap(child.popen)
        child.close()

    def posix_spawn() -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
            (os.POSIX_SPAWN_DUP2, fd, 3),
        ]
        pid = os.posix_spawn(true[0], true, env, file_actions=actions, setsid=True)
        os.waitpid(pid, 0)
        for end in (out_r, out_w, err_r, err_w):
            os.close(end)

    def preexec() -> None:
        popen = subprocess.Popen(
            true,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            pass_fds=(3,),
            preexec_fn=lambda: os.dup2(fd, 3),  # noqa: PLW1509 - what is measured
        )
        _reap(popen)

    methods: list[tuple[str, Callable[[], None]]] = [
        ("direct", direct),
        ("ours", shim),
        ("posix_spawn", posix_spawn),
        ("preexec_fn", preexec),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    try:
        for _ in range(10):
            for _, method in methods:
                method()
        # Interleaved, each round in another order: a busy moment hits every method alike.
        for sample in range(samples):
            shift = sample % len(methods)
            for name, method in methods[shift:] + methods[:shift]:
                started = time.perf_counter_ns()
                method()
                times[name].append(ns_to_ms(time.perf_counter_ns() - started))
    finally:
        listener.close()
    return [row(BENCH, "spawn /bin/true -> reaped", name, "ms", times[name]) for name, _ in methods]


def run(
    crashes: int, interval_s: float, spawn_samples: int
) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    binary = supervisord_bin(notes)
    systems: list[tuple[str, Callable[[], Run]]] = [
        ("ours", lambda: ours(True, crashes, interval_s)),
        ("no inherit", lambda: ours(False, crashes, interval_s)),
    ]
    if binary is not None:
        systems.append(("supervisord", lambda: supervisord(binary, crashes, interval_s)))
    rows: list[Row] = []
    checks: list[Check] = []
    for system, measure in systems:
        result = measure()
        done, outcomes = result.crashes, result.outcomes
        total_refused = sum(c.refused for c in done)
        failed = Counter(o.result for o in outcomes if o.result not in (OK, REFUSED, CUT))
        rows += [
            row(BENCH, "refused connections per crash", system, "conn", [c.refused for c in done]),
            row(
                BENCH,
                "SIGKILL -> first 200 (new connection)",
                system,
                "ms",
                [c.first_ok_ms for c in done],
            ),
            row(
                BENCH, "other failed connections per crash", system, "conn", [c.lost for c in done]
            ),
            row(
                BENCH,
                "  SIGKILL -> new child listening",
                system,
                "ms",
                [c.listened_ms for c in done],
            ),
        ]
        if result.spawned_ms:
            rows.append(row(BENCH, "  SIGKILL -> sidecar_spawned", system, "ms", result.spawned_ms))
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(failed.items())) or "none"
        span_s = (outcomes[-1].started_ns - outcomes[0].started_ns) / 1e9
        notes.append(
            f"{system}: {len(outcomes)} connections over {len(done)} crashes "
            f"({len(outcomes) / max(span_s, 1e-9):.0f}/s); refused in total {total_refused}; "
            f"otherwise failed: {kinds}"
        )
        if system == "ours":
            checks.append(
                at_most(
                    BENCH, "refused connections with inherit, all crashes", total_refused, 0, ""
                )
            )
    rows += spawn_costs(spawn_samples)
    notes.append(
        "systems: ours = our daemon with socket.inherit = true; no inherit = the same daemon "
        "without it; spawn rows: direct = children.spawn without a socket, ours = children.spawn "
        f"with listen_fd ({execshim.SH} exec shim), posix_spawn = os.posix_spawn with a dup2 file "
        "action, preexec_fn = subprocess with preexec_fn dup2 (forks instead of vfork)"
    )
    notes.append(
        "other failed: connections that failed otherwise than refused (reset, closed "
        "unanswered, timeout), noticed after the kill: mostly those the dying child had accepted"
    )
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench handoff", description=__doc__)
    parser.add_argument("--crashes", type=int, default=20, help="crash-restarts per system")
    parser.add_argument("--interval-ms", type=float, default=1.0, help="client cadence (ms)")
    parser.add_argument("--spawn-samples", type=int, default=200, help="spawns per method")
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.crashes, 1), args.interval_ms / 1000, args.spawn_samples)
    report(f"connections across crash-restarts; {machine()}", rows, checks, notes)
    return 0
