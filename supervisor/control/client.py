"""Addressing the running daemon from a command: find it, signal it, talk to its control socket.

The daemon is found through `<state_dir>/supervisor.pid`, verified by pid *and* create time *and*
that the process is a `supervisor run` of our uid: a stale file, a recycled or foreign pid means
"not running" (exit 3). Without a state dir from -c, --state-dir or $SUPERVISOR_STATE_DIR, the
per-user registry lists the running daemons. Stays psutil- and anyio-free on Linux: commands
must start fast.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from supervisor.control import protocol, starting, unixsock
from supervisor.control.protocol import Command, ErrorCode
from supervisor.control.readiness import Readiness
from supervisor.errors import (
    EXIT_LOCKED,
    EXIT_TIMEOUT,
    ConfigError,
    ControlError,
    NotRunningError,
    RequestRefusedError,
    SeveralRunningError,
    StillRunningError,
    SupervisorError,
    UnknownSidecarError,
    WaitTimeoutError,
    command,
)
from supervisor.system import paths, proctime
from supervisor.system.statedir import PID_NAME, STATUS_NAME, StateDir, float_field, int_field

STOP_POLL_MAX_S = 0.05
CONNECT_WAIT_S = 10.0  # a daemon that is starting binds its socket within this
REPLY_TIMEOUT_S = 30.0  # a start/stop/restart answers once its stops are done
MAX_LINE_BYTES = 16 << 20  # a status of many sidecars is big, but not this big


class BusyError(ControlError):
    """The daemon runs but takes no more clients now (its connection limit is reached, its
    backlog is full) or did not answer in time (`no_answer`): exit 75 (EX_TEMPFAIL), never
    "not running"."""

    exit_code = EXIT_LOCKED

    def __init__(
        self, state_dir: Path, pid: int | None, what: str, *, no_answer: bool = False
    ) -> None:
        who = f"the supervisor (pid {pid})" if pid is not None else "the supervisor"
        super().__init__(
            state_dir,
            f"{who} of {state_dir} is busy: {what}",
            "retry in a moment; if it stays busy, another program of yours holds its "
            f"connections (see who with: ss -xp | grep {unixsock.SOCKET_NAME})",
        )
        self.pid = pid
        self.what = what
        self.no_answer = no_answer


class RunningDaemon(NamedTuple):
    pid: int
    create_time: float
    state_dir: Path


def resolve_state_dir(config_arg: str | None, state_dir_arg: str | None) -> Path:
    """--state-dir, $SUPERVISOR_STATE_DIR, the config's state_dir, then the platform default."""
    configured: Path | None = None
    if not state_dir_arg and not os.environ.get(paths.STATE_DIR_ENV):
        from supervisor import config

        path = paths.config_path(config_arg)
        try:
            configured = config.load(path).supervisor.state_dir
        except ConfigError:
            if config_arg:  # an explicit -c that cannot be read is the user's mistake
                raise
    return paths.state_dir(state_dir_arg, configured)


def _read(state_dir: Path, name: str) -> dict[str, object] | None:
    try:
        with StateDir.open(state_dir, create=False) as state:
            return state.read(name)
    except (FileNotFoundError, NotADirectoryError):
        return None


def not_running(state_dir: Path, config_arg: str | None = None) -> NotRunningError:
    """The error, with a `supervisor run` hint that names the config it would need."""
    try:
        config = paths.config_path(config_arg)
    except SupervisorError:
        return NotRunningError(state_dir)
    return NotRunningError(state_dir, config, config_exists=config.is_file())


def find_daemon(state_dir: Path, config_arg: str | None = None) -> RunningDaemon:
    record = _read(state_dir, PID_NAME)
    pid = int_field(record, "pid")
    created = float_field(record, "create_time")
    if pid is None or created is None or not is_our_daemon(pid, created):
        raise not_running(state_dir, config_arg)
    return RunningDaemon(pid=pid, create_time=created, state_dir=state_dir)


def is_our_daemon(pid: int, created: float) -> bool:
    """`pid` runs, with the recorded create time, as `supervisor run`, and as our uid.

    A forged or stale supervisor.pid must never get a stranger signalled: a recycled pid fails
    the create time, another program fails the command line, another user's process the uid.
    """
    return proctime.is_alive(pid, created) and starting.is_supervisor_run(pid)


def discover() -> list[RunningDaemon]:
    """The running daemons of the per-user registry, verified; stale entries are removed."""
    from supervisor.control import registry  # not needed when the state dir is named

    found = []
    for entry in registry.entries():
        if not proctime.is_alive(entry.pid, entry.create_time):
            registry.remove(entry)
            continue
        try:
            daemon = find_daemon(entry.state_dir)
        except (SupervisorError, OSError):
            continue  # alive, but its state dir says otherwise (or is unusable): skip it
        if daemon.pid == entry.pid:
            found.append(daemon)
    return sorted(found, key=lambda d: str(d.state_dir))


def explicit(config_arg: str | None, state_dir_arg: str | None) -> bool:
    """A state dir was named (-c, --state-dir, $SUPERVISOR_STATE_DIR): no discovery."""
    return bool(config_arg or state_dir_arg or os.environ.get(paths.STATE_DIR_ENV))


def running(config_arg: str | None, state_dir_arg: str | None) -> list[RunningDaemon]:
    """The daemon(s) a command addresses: the named one, else those of the registry (when there
    are some), else the one of the configured or default state dir. Raises NotRunningError.

    A daemon is findable from its first instant: while a `supervisor run` of this registry is
    starting (exec'd, not yet locked and registered, START_GRACE_S at most), this waits for it
    rather than answer "not running" (`supervisor run ... & supervisor wait web`)."""
    deadline = time.monotonic() + starting.START_GRACE_S
    delay = 0.005
    while True:
        try:
            return _running_now(config_arg, state_dir_arg)
        except NotRunningError:
            if time.monotonic() >= deadline:
                raise
            if not starting.starting_daemons():
                # None starting now: it may have registered since the look above (the scan
                # leaves registered daemons out). One more look, then "not running" stands.
                return _running_now(config_arg, state_dir_arg)
        time.sleep(delay)
        delay = min(delay * 2, STOP_POLL_MAX_S)


def _running_now(config_arg: str | None, state_dir_arg: str | None) -> list[RunningDaemon]:
    if not explicit(config_arg, state_dir_arg):
        daemons = discover()
        if daemons:
            return daemons
    return [find_daemon(resolve_state_dir(config_arg, state_dir_arg), config_arg)]


def the_daemon(config_arg: str | None, state_dir_arg: str | None) -> RunningDaemon:
    """Exactly one daemon; SeveralRunningError (exit 2) if the registry lists more."""
    daemons = running(config_arg, state_dir_arg)
    if len(daemons) > 1:
        raise SeveralRunningError([d.state_dir for d in daemons])
    return daemons[0]


def read_status(daemon: RunningDaemon) -> dict[str, object]:
    """status.json of the running daemon (a minimal document if it is not written yet)."""
    doc = _read(daemon.state_dir, STATUS_NAME)
    if doc is None or not isinstance(doc.get("supervisor"), dict):
        doc = {"supervisor": {"pid": daemon.pid, "create_time": daemon.create_time}, "sidecars": []}
    return doc


def stop(daemon: RunningDaemon, wait_s: float | None) -> None:
    """SIGTERM; with `wait_s`, return only once the daemon is gone (StillRunningError after)."""
    send(daemon, signal.SIGTERM)
    if wait_s is None:
        return
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while proctime.is_alive(daemon.pid, daemon.create_time):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StillRunningError(daemon.pid, wait_s)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, STOP_POLL_MAX_S)


def send(daemon: RunningDaemon, sig: signal.Signals) -> None:
    # Re-verified just before the signal: the daemon may have exited since we read its PID file.
    if not is_our_daemon(daemon.pid, daemon.create_time):
        raise NotRunningError(daemon.state_dir)
    try:
        os.kill(daemon.pid, sig)
    except ProcessLookupError:
        raise NotRunningError(daemon.state_dir) from None


class ReloadResult(NamedTuple):
    applied: bool
    error: str | None


class ReloadTimeoutError(SupervisorError):
    """`reload --wait --timeout S`: the daemon did not finish applying the config in time."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, state_dir: Path, waited_s: float) -> None:
        self.state_dir = state_dir
        self.waited_s = waited_s
        super().__init__(
            f"the reload is not done after {waited_s:g}s (the daemon goes on with it: its new "
            "sidecars are still starting); wait longer, or see why with "
            f'"{command("status", "--state-dir", state_dir)}"'
        )


def reload(daemon: RunningDaemon, *, wait: bool, timeout_s: float | None = None) -> ReloadResult:
    """SIGHUP; with `wait`, return once the daemon has applied or rejected a reload that began
    after it received this signal (it counts SIGHUPs in status.json: see Daemon._reload);
    ReloadTimeoutError after `timeout_s`."""
    before = _reload_record(daemon).get("received")
    received = before if isinstance(before, int) else 0
    send(daemon, signal.SIGHUP)
    if not wait:
        return ReloadResult(True, None)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = 0.005
    while True:
        record = _reload_record(daemon)
        done = record.get("done")
        if isinstance(done, int) and done > received:
            error = record.get("error")
            return ReloadResult(record.get("result") == "applied", str(error) if error else None)
        if not is_our_daemon(daemon.pid, daemon.create_time):
            raise NotRunningError(daemon.state_dir)
        if deadline is not None and time.monotonic() >= deadline:
            raise ReloadTimeoutError(daemon.state_dir, timeout_s or 0.0)
        pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        delay = min(delay * 2, STOP_POLL_MAX_S)


def _reload_record(daemon: RunningDaemon) -> dict[str, object]:
    supervisor = read_status(daemon).get("supervisor")
    record = supervisor.get("reload") if isinstance(supervisor, dict) else None
    return record if isinstance(record, dict) else {}


# -- the control socket ---------------------------------------------------------------------------


class Reply(NamedTuple):
    result: object


class Exchange:
    """A connection's requests and what comes back, without I/O (the blocking Connection and the
    async client share it): request ids, the events that arrive while a reply is awaited, and
    what each message means."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.events: deque[dict[str, object]] = deque()  # arrived while awaiting a reply
        self._next_id = 1

    def request(self, cmd: Command, names: Sequence[str]) -> tuple[int, bytes]:
        """A new request: its id and its line."""
        request_id = self._next_id
        self._next_id += 1
        return request_id, protocol.encode(protocol.request(request_id, cmd, names))

    def reply(self, message: dict[str, object], request_id: int) -> Reply | None:
        """The reply to `request_id` if `message` is it, else None (an event is kept for later).
        An error reply raises its SupervisorError, as does a refusal sent as we connected (busy).
        """
        if "event" in message and "id" not in message:
            self.events.append(message)
            return None
        if message.get("id") is None and message.get("ok") is False:
            raise self.error(message.get("error"))  # refused as it connected: busy
        if message.get("id") != request_id:
            return None
        if message.get("ok") is True:
            return Reply(message.get("result"))
        raise self.error(message.get("error"))

    def error(self, error: object) -> SupervisorError:
        return error_from_reply(self.daemon.state_dir, error, pid=self.daemon.pid)


def connect_failure(
    daemon: RunningDaemon, exc: OSError, wait_s: float, *, expired: bool
) -> SupervisorError | None:
    """What a failed connect to control.sock means: None to try again (the daemon lives but does
    not listen yet, it is starting; or its backlog is full), else the error to raise. `expired`:
    the `wait_s` allowed for retries are over."""
    socket_path = daemon.state_dir / unixsock.SOCKET_NAME
    if isinstance(exc, BlockingIOError | TimeoutError):
        # Its backlog is full: it is alive and accepting, just not us yet.
        if not expired:
            return None
        return BusyError(daemon.state_dir, daemon.pid, f"no connection accepted within {wait_s:g}s")
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        if not proctime.is_alive(daemon.pid, daemon.create_time):
            return NotRunningError(daemon.state_dir)
        if not expired:
            return None
        return ControlError(
            daemon.state_dir,
            f"the supervisor (pid {daemon.pid}) does not accept connections on {socket_path}: "
            f"{exc.strerror}",
        )
    return ControlError(daemon.state_dir, f"cannot connect to {socket_path}: {exc.strerror or exc}")


class Connection:
    """A blocking JSON-lines connection to a daemon's control.sock."""

    def __init__(self, daemon: RunningDaemon, sock: socket.socket) -> None:
        self.daemon = daemon
        self._sock = sock
        self._buffer = bytearray()
        self._exchange = Exchange(daemon)
        self._eof = False

    @classmethod
    def open(cls, daemon: RunningDaemon, wait_s: float = CONNECT_WAIT_S) -> Connection:
        """Connect; while the daemon lives but does not listen yet (it is starting), retry."""
        deadline = time.monotonic() + wait_s
        delay = 0.005
        while True:
            try:
                sock = connect_socket(daemon)
            except OSError as exc:
                expired = time.monotonic() >= deadline
                error = connect_failure(daemon, exc, wait_s, expired=expired)
                if error is not None:
                    raise error from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            return cls(daemon, sock)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        cmd: Command,
        names: Sequence[str] = (),
        timeout_s: float | None = REPLY_TIMEOUT_S,
    ) -> object:
        """Send a request and return its result; its error as the matching SupervisorError."""
        request_id, line = self._exchange.request(cmd, names)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.sendall(line)
        except OSError as exc:
            # It may have refused us (busy) and closed before our request went out: its one
            # line says so, and is still there to read.
            raise self._refusal() or self._lost(exc) from None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            message = self._receive(deadline)
            if message is None:
                raise NotRunningError(self.daemon.state_dir)  # it closed: it is exiting
            if (reply := self._exchange.reply(message, request_id)) is not None:
                return reply.result

    def events(self, deadline: float | None = None) -> Iterator[dict[str, object]]:
        """Events in order until the daemon closes the connection (TimeoutError at `deadline`,
        a time.monotonic() instant)."""
        while self._exchange.events:
            yield self._exchange.events.popleft()
        while True:
            message = self._receive(deadline)
            if message is None:
                return
            if "event" in message:
                yield message

    def _receive(self, deadline: float | None) -> dict[str, object] | None:
        """The next JSON object line; None at EOF."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                if (message := protocol.decode(line)) is not None:
                    return message
                continue
            if self._eof:
                return None
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ControlError(self.daemon.state_dir, "the daemon sent an oversized line")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._sock.settimeout(remaining)
            else:
                self._sock.settimeout(None)
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                raise
            except OSError as exc:
                if exc.errno in (errno.ECONNRESET, errno.EPIPE):
                    data = b""
                else:
                    raise self._lost(exc) from None
            if not data:
                self._eof = True
            self._buffer += data

    def _refusal(self) -> Exception | None:
        """The error of a refusal line the daemon sent before closing, if there is one."""
        try:
            message = self._receive(time.monotonic() + 1.0)
        except (OSError, SupervisorError):
            return None
        if message is None or message.get("ok") is not False:
            return None
        return self._exchange.error(message.get("error"))

    def _lost(self, exc: OSError) -> Exception:
        if exc.errno in (errno.EPIPE, errno.ECONNRESET):
            return NotRunningError(self.daemon.state_dir)
        return ControlError(
            self.daemon.state_dir, f"the control connection failed: {exc.strerror or exc}"
        )


def error_from_reply(state_dir: Path, error: object, *, pid: int | None = None) -> SupervisorError:
    """The SupervisorError of an error reply's `error` object."""
    fields = error if isinstance(error, dict) else {}
    code = fields.get("code")
    message = str(fields.get("message", "no message"))
    if code == ErrorCode.UNKNOWN_SIDECAR:
        return UnknownSidecarError(
            _strings(fields.get("names")), _strings(fields.get("known")), state_dir
        )
    if code == ErrorCode.SHUTTING_DOWN:
        return NotRunningError(state_dir)
    if code == ErrorCode.BUSY:
        return BusyError(state_dir, pid, message)
    return RequestRefusedError(state_dir, str(code), message)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def connect_socket(daemon: RunningDaemon) -> socket.socket:
    """A connected blocking socket to the daemon's control.sock, checked to be served by it."""
    fd = os.open(daemon.state_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = unixsock.connect(fd, str(daemon.state_dir), timeout_s=REPLY_TIMEOUT_S)
    finally:
        os.close(fd)
    try:
        pid, uid = unixsock.peer_credentials(sock)
    except OSError:
        pid, uid = None, None
    # Only the verified daemon itself may answer (the folder is ours, but be certain).
    if uid != os.geteuid() or (pid is not None and pid != daemon.pid):
        sock.close()
        raise ControlError(
            daemon.state_dir,
            f"{daemon.state_dir / unixsock.SOCKET_NAME} is served by pid {pid} (uid {uid}), "
            f"not by the supervisor (pid {daemon.pid})",
            "stop whatever serves it",
        )
    return sock


# -- waiting --------------------------------------------------------------------------------------


def wait_ready(
    conn: Connection,
    names: Sequence[str],
    timeout_s: float | None,
    on_stopped: Callable[[list[str]], None] | None = None,
) -> list[dict[str, object]]:
    """Block until each of `names` (default: every sidecar) is ready; their records, in order.

    SidecarDownError as soon as one is `failed` or `exited`; WaitTimeoutError after
    `timeout_s`; NotRunningError if the daemon exits meanwhile. The subscription's snapshot and
    the events after it leave no gap in which a change could be missed.
    """
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    try:
        snapshot = conn.request(Command.SUBSCRIBE, names, timeout_s=timeout_s)
    except TimeoutError:
        raise WaitTimeoutError(timeout_s or 0.0, {}, conn.daemon.state_dir) from None
    readiness = Readiness(names, snapshot, conn.daemon.state_dir)
    stopped = readiness.stopped()
    if stopped and on_stopped is not None:
        on_stopped(stopped)  # it stays so until someone starts it: worth saying
    if (ready := readiness.ready_records()) is not None:
        return ready
    try:
        for event in conn.events(deadline):
            readiness.update(event)
            if (ready := readiness.ready_records()) is not None:
                return ready
    except TimeoutError:
        pending = readiness.pending()
        raise WaitTimeoutError(timeout_s or 0.0, pending, conn.daemon.state_dir) from None
    raise NotRunningError(conn.daemon.state_dir)
