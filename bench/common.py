"""What the benchmarks share: samples and their table, our daemon and supervisord as launchable
processes (always cleaned up, with their children), port polling and /proc process counters.

Wall-clock instants are `time.time_ns()` throughout, the clock the demo's `--report` line and the
daemon's JSON `timestamp` use, so instants from different processes can be subtracted.
"""

from __future__ import annotations

import contextlib
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests import support
from tests.support import PYTHON, ROOT, Event, arrival_ns, free_port, render_config, stamp_ns

__all__ = ["PYTHON", "ROOT", "Event", "arrival_ns", "free_port", "render_config", "stamp_ns"]

POLL_S = 0.0005  # connect() cadence while waiting for a port to accept
SETTLE_S = 0.2  # after a handshake: let trailing work (status write, output drain) finish
SUPERVISORD_SPEC = "supervisor>=4,<5"

# -- samples, rows, checks -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One measured quantity of one system; `system` "ours" is the base of the ratio column."""

    bench: str
    measure: str
    system: str
    unit: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


@dataclass(frozen=True)
class Check:
    bench: str
    text: str
    ok: bool


def row(bench: str, measure: str, system: str, unit: str, samples: Sequence[float]) -> Row:
    if not samples:
        raise RuntimeError(f"{bench}: no samples for {measure} ({system})")
    return Row(bench, measure, system, unit, tuple(samples))


def at_most(bench: str, label: str, value: float, limit: float, unit: str) -> Check:
    return Check(bench, f"{label}: {value:.3g} {unit} <= {limit:g} {unit}", value <= limit)


def ratio_at_least(bench: str, label: str, slow: float, fast: float, minimum: float) -> Check:
    ratio = slow / fast if fast > 0 else float("inf")
    return Check(bench, f"{label}: {ratio:.1f}x (>= {minimum:g}x)", ratio >= minimum)


def ns_to_ms(ns: float) -> float:
    return ns / 1e6


def render(rows: Sequence[Row]) -> str:
    """The table: median/min/max per row; `x ours` = median / median of the "ours" row."""
    head = (
        f"{'bench':<9} {'measure':<46} {'system':<12} {'n':>3} {'median':>10} {'min':>10} "
        f"{'max':>10} {'unit':<5} {'x ours':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        base = next(
            (
                b.median
                for b in rows
                if (b.bench, b.measure, b.system) == (r.bench, r.measure, "ours")
            ),
            None,
        )
        ratio = f"{r.median / base:>7.1f}" if base else ""
        lines.append(
            f"{r.bench:<9} {r.measure:<46} {r.system:<12} {len(r.samples):>3} "
            f"{r.median:>10.3f} {min(r.samples):>10.3f} {max(r.samples):>10.3f} {r.unit:<5} "
            f"{ratio}"
        )
    return "\n".join(lines)


def report(title: str, rows: Sequence[Row], checks: Sequence[Check], notes: Sequence[str]) -> None:
    print(f"== {title}")
    print(render(rows))
    for note in notes:
        print(f"note: {note}")
    for check in checks:
        print(f"{'ok  ' if check.ok else 'MISS'} {check.bench}: {check.text}")
    print(flush=True)


def machine() -> str:
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} cpus, "
        f"Python {platform.python_version()}"
    )


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as path:
        yield Path(path)


# -- ports and report files -------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (free_port alone may hand out the same port twice)."""
    ports: dict[int, None] = {}
    while len(ports) < count:
        ports[free_port()] = None
    return list(ports)


def connects(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_connect(port: int, timeout_s: float, poll_s: float = POLL_S) -> int:
    """time_ns of the first successful connect() to 127.0.0.1:port, polled every `poll_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        if connects(port):
            return time.time_ns()
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} did not accept within {timeout_s}s")
        time.sleep(poll_s)


def reports(path: Path) -> list[tuple[int, int]]:
    """(pid, listening time_ns) lines appended by `supervisor.demo --report`."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "listening":
            out.append((int(parts[1]), int(parts[2])))
    return out


def wait_report(path: Path, count: int, timeout_s: float) -> tuple[int, int]:
    """The `count`-th report line (pid, time_ns), polled every POLL_S."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = reports(path)
        if len(lines) >= count:
            return lines[count - 1]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no report #{count} in {path} within {timeout_s}s")
        time.sleep(POLL_S)


def wait_exited(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Wait for `proc` to exit, noticing it at once (a pidfd), and reap it.

    `Popen.wait(timeout)` polls with sleeps of up to 50 ms, which would be measured too.
    """
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return proc.wait(timeout_s)
    try:
        readable, _, _ = select.select([fd], [], [], timeout_s)
    finally:
        os.close(fd)
    if not readable:
        raise subprocess.TimeoutExpired(proc.args, timeout_s)
    return proc.wait()


def kill_and_wait(pid: int, timeout_s: float = 10.0) -> int:
    """SIGKILL `pid` through a pidfd; returns time_ns just before; waits until it has exited."""
    fd = os.pidfd_open(pid)
    try:
        sent = time.time_ns()
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        # The pidfd turns readable once the process has exited: its sockets are closed by then.
        readable, _, _ = select.select([fd], [], [], timeout_s)
        if not readable:
            raise TimeoutError(f"pid {pid} survived SIGKILL for {timeout_s}s")
    finally:
        os.close(fd)
    return sent


DEMO_SCRIPT = ROOT / "supervisor" / "demo.py"


def demo(port: int, *extra: str) -> list[str]:
    """The demo child, started lean for every system alike: `-I -S` skips site (and the editable
    install's import hook), ~30 ms of a start-up that is not the supervisor's; demo.py needs only
    the stdlib."""
    return [PYTHON, "-I", "-S", str(DEMO_SCRIPT), "--port", str(port), *extra]


def sidecar(
    name: str, port: int, *demo_args: str, **tables: Mapping[str, object]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "command": demo(port, *demo_args), "port": port}
    entry.update(tables)
    return entry


def respawning(
    name: str, port: int, listen_report: Path, **tables: Mapping[str, object]
) -> dict[str, Any]:
    """The demo sidecar reporting each launch to `listen_report`, restarted at once and without
    limit after every crash (the respawn measurements)."""
    restart = {"base_delay": 0.0, "max_attempts": 1_000_000}
    return sidecar(name, port, "--report", str(listen_report), **tables, restart=restart)


# -- process counters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStats:
    cpu_s: float  # on-CPU time of the live threads (schedstat)
    rss_kib: int
    voluntary_switches: int  # summed over /proc/PID/task/*/status
    fds: int
    # utime + stime of the whole process, threads that exited included (/proc/PID/stat, clock
    # ticks): `cpu_s` loses the time of a worker thread that exits between two samples.
    cpu_total_s: float = 0.0
    threads: int = 0  # live threads (/proc/PID/task)


def proc_stats(pid: int) -> ProcStats:
    proc = Path(f"/proc/{pid}")
    rss_kib = 0
    for line in (proc / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    switches = 0
    cpu_ns = 0
    tasks = list((proc / "task").iterdir())
    for task in tasks:
        with contextlib.suppress(FileNotFoundError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
            # Time on a CPU in ns (user + system): /proc/PID/stat only counts 10 ms ticks.
            cpu_ns += int((task / "schedstat").read_text().split()[0])
    stat = (proc / "stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    total_s = ticks / os.sysconf("SC_CLK_TCK")
    fds = len(os.listdir(proc / "fd"))
    return ProcStats(cpu_ns / 1e9, rss_kib, switches, fds, total_s, len(tasks))


def _kill_tree(root: int, known: Sequence[int] = ()) -> None:
    """SIGKILL `root` and every group its descendants (and `known` pids) lead or belong to."""
    pids = set(known)
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process(root).children(recursive=True))
    with contextlib.suppress(ProcessLookupError):
        os.kill(root, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- our daemon ---------------------------------------------------------------------------------


class Daemon(support.Daemon):
    """`supervisor run` (JSON logs, info level, non-interactive) on a config in `workdir`.

    Leaving the context stops the daemon gracefully, or kills it and every process group of its
    children when it does not stop.
    """

    def __init__(
        self,
        workdir: Path,
        sidecars: Sequence[Mapping[str, object]],
        supervisor: Mapping[str, object] | None = None,
    ) -> None:
        config = workdir / "supervisor.toml"
        config.write_text(render_config(sidecars, supervisor))
        super().__init__(config, workdir / "state", "--non-interactive", log_level="info")

    def write_config(
        self,
        sidecars: Sequence[Mapping[str, object]],
        supervisor: Mapping[str, object] | None = None,
    ) -> None:
        self.config.write_text(render_config(sidecars, supervisor))

    def count(self, name: str) -> int:
        return len(self.find(name))

    def close(self) -> None:
        if self.proc.poll() is None:
            spawned = [int(e["pid"]) for e in self.find("sidecar_spawned")]
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                _kill_tree(self.proc.pid, spawned)
                self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- supervisord --------------------------------------------------------------------------------


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sidecar-supervisor-bench"


def supervisord_bin(notes: list[str]) -> Path | None:
    """supervisord 4.x from its own virtual environment (its import name clashes with ours).

    Installed on first use into the bench cache dir; None (and a note) when that fails.
    """
    venv = cache_dir() / "supervisord"
    binary = venv / "bin" / "supervisord"
    if not binary.exists():
        print(f"installing {SUPERVISORD_SPEC} into {venv} ...", flush=True)
        try:
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", SUPERVISORD_SPEC],
                check=True,
                timeout=600,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"supervisord skipped: cannot install {SUPERVISORD_SPEC}: {exc}")
            return None
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not version.startswith("4."):
        notes.append(f"supervisord skipped: {binary} reports version {version!r}, not 4.x")
        return None
    if not any(n.startswith("supervisord ") for n in notes):
        notes.append(f"supervisord {version} from {venv}")
    return binary


@dataclass(frozen=True)
class Program:
    name: str
    command: Sequence[str]
    stop_wait_s: float = 1.0


class Supervisord:
    """`supervisord -n` with `startsecs=0`, `autorestart=true`, stop/kill as group."""

    def __init__(
        self, binary: Path, workdir: Path, programs: Sequence[Program], *, control: bool = False
    ) -> None:
        self.binary = binary
        self.socket = workdir / "supervisord.sock"
        conf = workdir / "supervisord.conf"
        lines = [
            "[supervisord]",
            "nodaemon=true",
            f"logfile={workdir / 'supervisord.log'}",
            f"pidfile={workdir / 'supervisord.pid'}",
            f"childlogdir={workdir}",
        ]
        if control:
            lines += [
                "[unix_http_server]",
                f"file={self.socket}",
                "[rpcinterface:supervisor]",
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                "[supervisorctl]",
                f"serverurl=unix://{self.socket}",
            ]
        for program in programs:
            lines += [
                f"[program:{program.name}]",
                f"command={shlex.join(program.command)}",
                f"directory={ROOT}",
                "startsecs=0",
                "autorestart=true",
                "startretries=1000000",
                f"stopwaitsecs={program.stop_wait_s:g}",
                "stopasgroup=true",
                "killasgroup=true",
            ]
        conf.write_text("\n".join(lines) + "\n")
        self.conf = conf
        self.proc = subprocess.Popen(
            [str(binary), "-n", "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=workdir,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ctl(self) -> list[str]:
        return [str(self.binary.parent / "supervisorctl"), "-c", str(self.conf)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                _kill_tree(self.proc.pid)
                self.proc.wait(10)

    def __enter__(self) -> Supervisord:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def console_script() -> list[str]:
    """Our `supervisor` console script next to this interpreter, else `python -m supervisor`."""
    script = Path(PYTHON).parent / "supervisor"
    if script.exists():
        return [str(script)]
    found = shutil.which("supervisor")
    return [found] if found else [PYTHON, "-m", "supervisor"]
