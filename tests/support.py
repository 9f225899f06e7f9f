"""Test helpers: free ports, configs, a real daemon whose JSON log lines we can wait on, holders.

Everything here starts real processes and synchronises on handshakes (a log event, a line on
stdout), each bounded by a timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

FORBIDDEN_PORT = 4820
PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent

Event = dict[str, Any]


def run_script(code: str, timeout_s: float = 60.0) -> str:
    """What `code` prints, run by a fresh interpreter from the checkout (it may import `tests.`):
    a process whose only children, fds and limits are the script's own. It must exit 0."""
    done = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr  # its traceback, where check=True would hide it
    return done.stdout.strip()


def free_port(*, ipv6: bool = False) -> int:
    """A TCP port that is free right now on 127.0.0.1 (and ::1/:: when `ipv6`)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port == FORBIDDEN_PORT:
            continue
        if ipv6:
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock6:
                    sock6.bind(("::", port))
            except OSError:
                continue
        return port


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def render_config(
    sidecars: Sequence[Mapping[str, object]], supervisor: Mapping[str, object] | None = None
) -> str:
    """TOML text for a config; nested mappings in a sidecar become its sub-tables."""
    lines: list[str] = []
    if supervisor:
        lines.append("[supervisor]")
        lines += [f"{k} = {toml_value(v)}" for k, v in supervisor.items()]
    for sidecar in sidecars:
        lines.append("[[sidecar]]")
        tables = {k: v for k, v in sidecar.items() if isinstance(v, Mapping) and k != "env"}
        lines += [f"{k} = {toml_value(v)}" for k, v in sidecar.items() if k not in tables]
        for name, table in tables.items():
            assert isinstance(table, Mapping)
            lines.append(f"[sidecar.{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, sidecars: list[dict[str, Any]], **supervisor: object) -> Path:
    """`tmp_path/supervisor.toml` with these sidecars and [supervisor] keys."""
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars, supervisor or None))
    return config


def read_status(state: Path) -> dict[str, Any]:
    """The daemon's status.json ({} while it is absent or being replaced)."""
    try:
        doc: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


def demo_command(port: int, *extra: str) -> list[str]:
    return [PYTHON, "-m", "supervisor.demo", "--port", str(port), *extra]


def demo_sidecar(name: str, port: int, *extra: str, **tables: object) -> dict[str, object]:
    """A sidecar entry running the demo server, fast restarts and a short stop timeout."""
    return sidecar_entry(name, demo_command(port, *extra), port, **tables)


def sidecar_entry(
    name: str, command: Sequence[str], port: int, **tables: object
) -> dict[str, object]:
    """A sidecar entry with fast restarts and a short stop timeout, `tables` merged in."""
    entry: dict[str, object] = {
        "name": name,
        "command": list(command),
        "port": port,
        "restart": {"base_delay": 0.05, "max_delay": 0.2},
        "stop": {"timeout": 2.0},
    }
    return merge_tables(entry, tables)


def merge_tables(entry: dict[str, object], tables: Mapping[str, object]) -> dict[str, object]:
    """`entry` with each of `tables` merged into the table of that name, or set if not a table."""
    for key, value in tables.items():
        base = entry.get(key)
        if isinstance(base, dict) and isinstance(value, Mapping):
            entry[key] = {**base, **value}
        else:
            entry[key] = value
    return entry


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any SUPERVISOR_* variable (as a user's fresh shell has
    none; the session's private registry goes too), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env.update(extra)
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str] | None = None,
    clean: bool = False,
    cwd: Path = ROOT,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`python -m supervisor ARGS` as a user would run it: output captured as text, a non-zero
    exit returned, not raised. `env` is laid over the test's environment, or with `clean` over
    `clean_env()`."""
    return subprocess.run(
        [PYTHON, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
        env={**(clean_env() if clean else os.environ), **(env or {})},
    )


def one_line(stderr: str) -> str:
    """The message of a user error: exactly one `supervisor: ...` line, never a traceback."""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("supervisor: "), stderr
    assert "Traceback" not in stderr
    return stderr.removeprefix("supervisor: ").rstrip("\n")


class LogTimeout(AssertionError):
    pass


def daemon_command(
    config: Path,
    state_dir: Path,
    *extra_args: str,
    log_level: str = "debug",
    command: Sequence[str] = (PYTHON, "-m", "supervisor"),
) -> list[str]:
    """argv of `supervisor run` logging JSON (at debug level) for tests to read; `command` is
    how to run `supervisor` (the benchmarks use an installed console script)."""
    return [
        *command, "run", "-c", str(config), "--state-dir", str(state_dir),
        "--log-format", "json", "--log-level", log_level, *extra_args,
    ]  # fmt: skip


def wait_logged(log: Path, event: str, timeout: float = 15.0) -> dict[str, Any]:
    """Poll a daemon's JSON log file (bounded) until `event` appears; return it."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text() if log.exists() else ""
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    return record
        if time.monotonic() > deadline:
            raise LogTimeout(f"no {event} in {log} within {timeout}s:\n{text[-3000:]}")
        time.sleep(0.02)


ARRIVAL = "_arrival_ns"  # added to each event: when the reader got it (time.time_ns())


def arrival_ns(event: Event) -> int:
    return int(event[ARRIVAL])


def stamp_ns(event: Event) -> int:
    """The daemon's own `timestamp` of an event, in ns since the epoch (like time.time_ns())."""
    stamp = datetime.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (stamp - epoch) // datetime.timedelta(microseconds=1) * 1000


class Daemon:
    """A real `supervisor run` whose stderr JSON events are collected by a reader thread.

    Each event carries `_arrival_ns`, the instant the reader got it (the benchmarks use it).
    """

    def __init__(
        self,
        config: Path,
        state_dir: Path,
        *extra_args: str,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        log_level: str = "debug",
        command: Sequence[str] = (PYTHON, "-m", "supervisor"),
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.events: list[Event] = []
        self.raw_lines: list[str] = []
        self._cond = threading.Condition()
        full_env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self.started_ns = time.time_ns()
        self.proc = subprocess.Popen(
            daemon_command(config, state_dir, *extra_args, log_level=log_level, command=command),
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=ROOT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            arrived = time.time_ns()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.raw_lines.append(line)
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        event[ARRIVAL] = arrived
                        self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def find(self, event: str, **fields: object) -> list[Event]:
        with self._cond:
            return [e for e in self.events if _matches(e, event, fields)]

    def wait_for(
        self,
        event: str,
        *,
        timeout: float = 15.0,
        count: int = 1,
        where: Callable[[Event], bool] | None = None,
        **fields: object,
    ) -> Event:
        """Block until the `count`-th matching event is logged; return it.

        Each event is examined once (a chatty child logs tens of thousands of lines; rescanning
        them all on every new line would starve the reader thread).
        """
        deadline = time.monotonic() + timeout
        examined = matched = 0
        with self._cond:
            while True:
                while examined < len(self.events):
                    candidate = self.events[examined]
                    examined += 1
                    if _matches(candidate, event, fields) and (where is None or where(candidate)):
                        matched += 1
                        if matched == count:
                            return candidate
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise LogTimeout(
                        f"no {event} {fields} (x{count}) within {timeout}s; log tail:\n"
                        + "\n".join(self.raw_lines[-40:])
                    )
                self._cond.wait(min(remaining, 0.5))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def dump_status(self, timeout: float = 15.0) -> Event:
        """Handshake: SIGUSR2, then the `status_dumped` event it causes (status.json is
        rewritten before it is logged)."""
        before = len(self.find("status_dumped"))
        self.signal(signal.SIGUSR2)
        return self.wait_for("status_dumped", count=before + 1, timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM the daemon and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit; past `timeout`, SIGKILL it and fail with its log tail."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise LogTimeout(f"no exit within {timeout}s; log tail:\n{self.tail()}") from exc
        self._reader.join(5)
        self._close_pipe()
        return code

    def kill(self) -> None:
        """SIGKILL the daemon only (its children survive as orphans)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        self._close_pipe()

    def _close_pipe(self) -> None:
        # Once the reader has seen EOF (a sidecar holding the pipe may keep it from that).
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.raw_lines[-n:])

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()  # a daemon that does not stop within 20 s fails the test, with its log


def _matches(event: Event, name: str, fields: Mapping[str, object]) -> bool:
    return event.get("event") == name and all(event.get(k) == v for k, v in fields.items())


HOLDER_SCRIPT = textwrap.dedent(
    """
    import os, signal, socket, sys
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(sys.argv[3] == "v6only"))
    if "ignore-term" in sys.argv[3:]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    sock.listen(16)
    print("listening", os.getpid(), flush=True)
    while True:
        conn, _ = sock.accept()
        conn.close()
    """
)


def live_tags(sidecar: str = "web") -> dict[str, str]:
    """The env tags of a live instance of `sidecar`, started by a supervisor that still runs (the
    test process stands in for it). A holder with the marker alone is `unproven` (issue 24)."""
    me = psutil.Process()
    return {
        "SUPERVISOR_SIDECAR": sidecar,
        "SUPERVISOR_OWNER": f"{me.pid}:{me.create_time()!r}",
    }


class Holder:
    """A process of ours that holds a TCP port (LISTEN) until stopped; prints when listening."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        *flags: str,
        env: Mapping[str, str] | None = None,
        argv0_marker: str | None = None,
        user_cmd: Sequence[str] = (),
        start_new_session: bool = True,
    ) -> None:
        args = [PYTHON, "-c", HOLDER_SCRIPT, host, str(port), *(flags or ("-",))]
        if argv0_marker is not None:
            args.append(argv0_marker)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*user_cmd, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=start_new_session,
        )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, 10.0)
        if not line.startswith(b"listening"):
            self.stop()
            raise RuntimeError(f"holder failed to listen on {host}:{port}: {line!r}")
        self.pid = int(line.split()[1])
        self.create_time = psutil.Process(self.pid).create_time()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def untouched(self) -> bool:
        """Still running, same process (pid and create time)."""
        try:
            return self.alive() and psutil.Process(self.pid).create_time() == self.create_time
        except psutil.Error:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if _leads_group(self.proc.pid):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gone_owner_tag() -> str:
    """A SUPERVISOR_OWNER value naming a daemon that is gone (a real process that has exited)."""
    proc = subprocess.Popen(["true"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait(10)
    return f"{proc.pid}:{created}"


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return False


def _readline(stream: Any, timeout: float) -> bytes:
    """Read one line from a pipe, bounded by `timeout`."""
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else b""


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition of the outside world (a process gone, a port free), bounded."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def pid_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) != 0


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    try:
        yield daemon
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


SHARED_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, subprocess, sys, time
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(16)
    # Fork after listen: the co-holder execs another program but keeps the listening socket.
    coholder = subprocess.Popen(
        [sys.executable, "-c", "import time\\nwhile True: time.sleep(60)", "coholder"],
        pass_fds=[sock.fileno()],
        env=json.loads(sys.argv[2]),
        start_new_session=sys.argv[3] == "own-session",
        stdin=subprocess.DEVNULL,
    )
    print("listening", os.getpid(), coholder.pid, flush=True)
    coholder.wait()
    while True:
        time.sleep(60)
    """
)


class SharedHolder:
    """A process of ours listening on a port whose socket a second process shares (fork after
    listen). `env` is the leader's environment on top of ours (minus SUPERVISOR_*), and
    `coholder_env` the co-holder's (default: none of SUPERVISOR_*: a foreign program)."""

    def __init__(
        self,
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        coholder_env: Mapping[str, str] | None = None,
        coholder_own_session: bool = False,
    ) -> None:
        self.coholder_pid = 0
        self.create_times: dict[int, float] = {}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
        session = "own-session" if coholder_own_session else "leader-group"
        self.proc = subprocess.Popen(
            [PYTHON, "-c", SHARED_SCRIPT, str(port), json.dumps({**clean, **(coholder_env or {})}),
             session],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**clean, **(env or {})},
            start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, 10.0)
        if not line.startswith(b"listening"):
            self.stop()
            raise RuntimeError(f"shared holder failed to listen on {port}: {line!r}")
        self.pid = int(line.split()[1])
        self.coholder_pid = int(line.split()[2])
        self.create_times = {
            pid: psutil.Process(pid).create_time() for pid in (self.pid, self.coholder_pid)
        }

    def untouched(self) -> bool:
        """Both processes still run, the same ones (pid and create time)."""
        for pid, created in self.create_times.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() != created or proc.status() == psutil.STATUS_ZOMBIE:
                    return False
            except psutil.Error:
                return False
        return self.proc.poll() is None

    def stop_coholder(self) -> None:
        """SIGKILL the co-holder (the leader, its parent, reaps it at once)."""
        if not self.coholder_pid:
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(self.coholder_pid)
            if proc.create_time() == self.create_times[self.coholder_pid]:
                proc.kill()
        wait_until(lambda: pid_gone(self.coholder_pid), 10.0, "the co-holder gone")

    def stop(self) -> None:
        """Both at once (one group, unless the co-holder has its own session): a daemon waiting
        on the port must not see the leader alone and reclaim it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            self.stop_coholder()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> SharedHolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ControlClient:
    """A raw JSON-lines client of a daemon's `control.sock`: the wire format, not our client.

    Connects through the state dir's fd (`/proc/self/fd/N/control.sock` on Linux), so a long
    tmp path does not matter. Replies are matched by id; events that arrive meanwhile are kept.
    """

    def __init__(self, state_dir: Path, timeout: float = 15.0) -> None:
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            where = f"/proc/self/fd/{fd}" if sys.platform == "linux" else str(state_dir)
            self.sock.connect(f"{where}/control.sock")
        except BaseException:
            self.sock.close()
            raise
        finally:
            os.close(fd)
        self._buffer = b""
        self.events: list[Event] = []
        self._next_id = 0

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: Mapping[str, object]) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def message(self, timeout: float | None = None) -> Event | None:
        """The next line as JSON; None at EOF."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message from the daemon in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        parsed: Event = json.loads(line)
        return parsed

    def request(self, cmd: str, names: Sequence[str] | None = None, **extra: object) -> Event:
        """Send a request; its reply (events that arrive first are kept in `events`)."""
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "cmd": cmd, **extra}
        if names is not None:
            message["names"] = list(names)
        self.send(message)
        return self.reply(self._next_id)

    def reply(self, request_id: object) -> Event:
        while True:
            got = self.message()
            if got is None:
                raise AssertionError("the daemon closed the connection before replying")
            if "event" in got and "id" not in got:
                self.events.append(got)
            elif got.get("id") == request_id:
                return got

    def wait_event(self, event: str, timeout: float = 15.0, **fields: object) -> Event:
        """The first (kept or new) event named `event` with `fields`; earlier ones are consumed."""
        deadline = time.monotonic() + timeout
        while True:
            while self.events:
                candidate = self.events.pop(0)
                if _matches(candidate, event, fields):
                    return candidate
            got = self.message(max(0.0, deadline - time.monotonic()))
            if got is None:
                raise AssertionError(f"connection closed before {event} {fields}")
            if "event" in got:
                self.events.append(got)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sidecar_pids(client: ControlClient) -> dict[str, object]:
    """name -> pid, from a status request on the socket."""
    reply = client.request("status")
    assert reply["ok"], reply
    return {s["name"]: s["pid"] for s in reply["result"]["sidecars"]}


def wait_recorded(state: Path, pid: int, timeout: float = 10.0) -> None:
    """Handshake before an unclean exit: the spawn's ledger entry is on disk. It is written in a
    worker thread right after the spawn; a daemon killed before that leaves no entry (the window
    README.md describes), which a test of the sweep must not depend on."""
    wait_until(
        lambda: any((state / "_spawns").glob(f"{pid}-*.json")), timeout, f"pid {pid} in the ledger"
    )


@contextlib.contextmanager
def session_leader() -> Iterator[int]:
    """A child of the test that leads its own session, as the daemon's sidecars do; its pid.
    (Not the runner's parent: as pid 1 of a pid namespace the runner has none it can see, and
    elsewhere its session may lead outside the namespace, where getsid() says 0.)"""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait(10)
