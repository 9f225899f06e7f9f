"""Readiness probes (tcp, http) that also prove the listener is our child's, not a stranger's;
and the signals a child gives itself (v3): a line of its output (`log`), a command that exits 0
(`exec`), an sd_notify READY=1 (`notify`, see notifysock.py).

With an inherited socket (`socket.inherit`) the daemon's own socket accepts connections into
its backlog before the child serves, so a connect proves nothing: the tcp probe waits until
the child's tree has accepted the probe's own connection, the http probe until it answered.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
from anyio.abc import SocketAttribute

from supervisor.config import ProbeKind, SidecarConfig
from supervisor.core.lifecycle import probe_delay_s
from supervisor.system import net, procs, workers

CONNECT_TIMEOUT_S = 1.0
HTTP_TIMEOUT_S = 2.0
MAX_RESPONSE_HEAD = 4096


async def tcp_failure(host: str, port: int, timeout_s: float) -> str | None:
    """None if a connect to host:port succeeds within `timeout_s`; else why not."""
    try:
        with anyio.fail_after(timeout_s):
            stream = await anyio.connect_tcp(host, port)
    except TimeoutError:
        return f"no connection within {timeout_s:g}s"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    await stream.aclose()
    return None


async def http_failure(host: str, port: int, path: str, timeout_s: float) -> str | None:
    """None on a 2xx answer to `GET path` within `timeout_s`; else why not."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: sidecar-supervisor\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    head = b""
    try:
        with anyio.fail_after(timeout_s):
            stream = await anyio.connect_tcp(host, port)
            async with stream:
                await stream.send(request)
                while b"\r\n" not in head and len(head) < MAX_RESPONSE_HEAD:
                    head += await stream.receive(MAX_RESPONSE_HEAD)
    except TimeoutError:
        return f"no HTTP answer within {timeout_s:g}s"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        if not head:
            return "the connection closed without an answer"
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return "not an HTTP answer"
    if parts[1][:1] != b"2" or len(parts[1]) != 3:
        return "HTTP " + _status_text(b" ".join(parts[1:]))
    return None


def _status_text(status: bytes) -> str:
    return status[:80].decode("ascii", "replace")


async def _connects(host: str, port: int) -> bool:
    """Does a connect to host:port succeed within CONNECT_TIMEOUT_S? (The readiness probe.)

    To an address (the usual `host`): a bare non-blocking socket, connected and closed. A
    readiness probe runs once or more per spawn, and `anyio.connect_tcp` (a task group, a
    task, an event, a transport for a stream that is closed at once) cost several times the
    connect itself in a crash storm. A host name goes through `tcp_failure` (its lookup).
    """
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return await tcp_failure(host, port, CONNECT_TIMEOUT_S) is None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        error = sock.connect_ex((host, port))
        if error == errno.EINPROGRESS:
            with anyio.move_on_after(CONNECT_TIMEOUT_S):
                await anyio.wait_writable(sock)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return error == 0


async def _http_ok(host: str, port: int, path: str) -> bool:
    """True on any 2xx answer to `GET path`."""
    return await http_failure(host, port, path, HTTP_TIMEOUT_S) is None


Members = Callable[[], list[int]]  # the processes of the child's cgroup (cgroups.py), if any


def listener_is_ours(port: int, child_pid: int, members: Members | None = None) -> bool:
    """The LISTEN socket on `port` belongs to the child or one of its descendants (or, with a
    cgroup, to any member of it: a double-forked server is no descendant, but still a member)."""
    return bool(net.pids_listening(port, _tree(child_pid, members)))


class LogMatcher:
    """`probe = "log"`: set `matched` at the first output line the pattern is found in."""

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.matched = anyio.Event()

    def feed(self, line: str) -> None:
        if not self.matched.is_set() and self.pattern.search(line):
            self.matched.set()


EXEC_CHECK_CAP_S = 10.0  # one readiness command may take this long at most (then killed)


async def exec_ready(config: SidecarConfig, env: Mapping[str, str]) -> None:
    """`probe = "exec"`: run `ready.command` until it exits 0. Each run is bounded (and killed
    with its process group past the bound, or when the caller's ready.timeout cancels it)."""
    from supervisor.sidecar import execcheck  # a command in its own session, group killed

    started = time.monotonic()
    bound = min(EXEC_CHECK_CAP_S, config.ready.timeout_s)
    command = config.ready.command
    while await execcheck.run_exec(command, cwd=config.cwd, env=env, timeout_s=bound):  # noqa: ASYNC110 - polling is what an exec probe is
        await anyio.sleep(probe_delay_s(time.monotonic() - started, config.ready.interval_s))


async def wait_ready(
    config: SidecarConfig,
    child_pid: int,
    on_stranger: Callable[[], None] | None = None,
    *,
    listen_inode: int | None = None,
    signal: anyio.Event | None = None,
    exec_env: Mapping[str, str] | None = None,
    members: Members | None = None,
) -> None:
    """Return once the sidecar is ready; the caller bounds the wait (ready.timeout).

    `listen_inode`: the inherited socket the child got as fd 3 (socket.inherit); `members`: the
    child's cgroup's processes, which are its own whatever their parentage. `signal`: set by the
    child itself (a log line matched, READY=1 received) for `log` and `notify`.
    """
    match config.ready.probe:
        case ProbeKind.LOG | ProbeKind.NOTIFY:
            if signal is None:
                raise ValueError(f"a {config.ready.probe} probe needs its signal")
            await signal.wait()
            return
        case ProbeKind.EXEC:
            await exec_ready(config, exec_env or {})
            return
        case _:
            pass
    if config.ready.probe is ProbeKind.NONE or config.port is None:
        return
    port = config.port
    started = time.monotonic()
    if listen_inode is not None:
        pause = _pacer(started, config.ready.interval_s)
        if config.ready.probe is ProbeKind.TCP:
            probe = _AcceptProbe(config.host, port, child_pid, listen_inode, pause, members=members)
            await probe.wait(on_stranger)
            return
        while not (
            _tree_holds(listen_inode, port, _tree(child_pid, members))
            and await _http_ok(config.host, port, config.ready.path)
        ):
            await pause()
        return
    while True:
        if net.anyone_listening(port) is not False and await _connects(config.host, port):
            # A walk of /proc: in a worker thread, off the event loop.
            if await workers.run_sync(listener_is_ours, port, child_pid, members):
                if config.ready.probe is ProbeKind.TCP:
                    return
                if await _http_ok(config.host, port, config.ready.path):
                    return
            elif on_stranger is not None:
                on_stranger()
        await anyio.sleep(probe_delay_s(time.monotonic() - started, config.ready.interval_s))


def _tree(child_pid: int, members: Members | None = None) -> list[int]:
    tree = [child_pid, *procs.descendant_pids(child_pid)]
    return list(dict.fromkeys([*tree, *members()])) if members is not None else tree


def _tree_holds(listen_inode: int, port: int, tree: list[int]) -> bool:
    """The child's tree holds the inherited socket itself (read from its own fds)."""
    held = net.pids_holding(listen_inode, tree)
    if held is None:  # no /proc: ask each process for its listeners on the port
        held = net.pids_listening(port, tree)
    return bool(held)


Pacer = Callable[[], Awaitable[None]]


def _pacer(started: float, interval_s: float) -> Pacer:
    def pause() -> Awaitable[None]:
        return anyio.sleep(probe_delay_s(time.monotonic() - started, interval_s))

    return pause


def _answered(sock: socket.socket) -> bool:
    """Did the server side do anything with our connection (send, close, reset)?

    Nothing does, while it waits in the backlog: only a process that accepted it can.
    """
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset
    return True  # data, or end of stream


class _AcceptProbe:
    """The tcp probe of an inherited socket: one connection, kept open until the child's tree
    accepts it (then one of its processes holds the server side of that very connection).

    A server that accepted it and closed it at once can no longer be asked who it was: that
    counts when the child's tree holds the listening socket (the daemon, its only other holder,
    never accepts).
    """

    def __init__(
        self,
        host: str,
        port: int,
        child_pid: int,
        listen_inode: int,
        pause: Pacer,
        *,
        members: Members | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.child_pid = child_pid
        self.members = members
        self.listen_inode = listen_inode
        self.pause = pause

    async def wait(self, on_stranger: Callable[[], None] | None) -> None:
        while True:
            try:
                with anyio.fail_after(CONNECT_TIMEOUT_S):
                    stream = await anyio.connect_tcp(self.host, self.port)
            except (OSError, TimeoutError):
                await self.pause()
                continue
            async with stream:
                if await self._accepted(stream):
                    return
            if on_stranger is not None:
                on_stranger()  # another process took this connection: try a new one
            await self.pause()

    async def _accepted(self, stream: anyio.abc.SocketStream) -> bool:
        """True once the child's tree accepted `stream`'s connection; False if another did."""
        peer_port = stream.extra(SocketAttribute.local_port)
        raw = stream.extra(SocketAttribute.raw_socket)
        # A duplicate to peek through (the event loop's own wrapper offers no recv).
        with socket.fromfd(raw.fileno(), raw.family, raw.type) as peek:
            while True:
                tree = _tree(self.child_pid, self.members)
                accepted = net.accepted_by(self.port, peer_port, tree)
                if accepted is None and _answered(peek):
                    accepted = _tree_holds(self.listen_inode, self.port, tree)
                if accepted is not None:
                    return accepted
                await self.pause()
