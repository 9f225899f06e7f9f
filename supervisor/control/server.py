"""The control socket: `control.sock` in the state dir, JSON lines, same-uid peers only.

Every client is bounded: a request line is at most 64 KiB (a longer one gets `too_large` and is
skipped), its outgoing queue at most OUTBOX_BYTES (a client that stops reading is dropped, never
waited for), and at most MAX_CLIENTS are connected at once (the next one gets `busy`). Nothing a
client sends can raise into the daemon: a bug in a handler is logged and answered `internal`.

Supervision has priority over clients: all of the server's work together (accepting, reading,
parsing, replying) may take at most CONTROL_SHARE of the event loop's time in each
BUDGET_WINDOW_S; past that, every client waits for the next window, and the sidecars' exits,
probes and respawns run meanwhile (`budget.Budget`). Only under a flood is anyone made to wait.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Protocol

import anyio
import anyio.lowlevel
from structlog.typing import FilteringBoundLogger

from supervisor.control import protocol, unixsock
from supervisor.control.budget import Budget
from supervisor.control.events import EventHub
from supervisor.control.protocol import Command, ErrorCode, ProtocolError, Request
from supervisor.system import workers
from supervisor.system.statedir import StateDir

MAX_CLIENTS = 256
OUTBOX_BYTES = 1 << 20  # per client: replies and events not yet taken by it
READ_CHUNK = 65536
BACKLOG = 128
HALF_CLOSE_FLUSH_S = 5.0  # a client that shut down its writing side still gets its replies
ACCEPT_RETRY_S = 0.1  # out of fds: nothing to wait on but time
BIND_RETRY_MAX_S = 5.0  # out of fds at start: the socket is tried again, at most this apart

_ACCEPT_SHORTAGE = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class Handler(Protocol):
    """What the daemon does for requests (supervisor.control.actions.SidecarActions)."""

    def status(self, names: Sequence[str]) -> dict[str, object]:
        """The status document (only `names`' sidecars when given); ProtocolError if unknown."""

    async def act(self, cmd: Command, names: Sequence[str]) -> list[dict[str, object]]:
        """start / stop / restart those sidecars; one result per name."""


class Client:
    """One connection and its bounded outbox.

    Data is sent at once when the socket takes it (the usual case: no task, no loop turn); only
    what the socket does not take waits in the outbox, for a writer task that exists only then.
    """

    def __init__(self, sock: socket.socket, pid: int | None) -> None:
        self.sock = sock
        self.pid = pid
        self.names: frozenset[str] | None = None
        self.scope = anyio.CancelScope()
        self.dropped: str | None = None
        self.spawn: Callable[[Callable[[], Coroutine[object, object, None]]], object] | None = None
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._writing = False
        self._emptied = anyio.Event()
        self._sent = 0  # of the head of the queue

    def send(self, message: dict[str, object]) -> None:
        self.deliver(protocol.encode(message))

    def deliver(self, data: bytes) -> None:
        if self.dropped is not None or self.scope.cancel_called:
            return
        if self._queued + len(data) > OUTBOX_BYTES:
            self.drop("it is not reading: its outgoing queue is full")
            return
        self._queue.append(data)
        self._queued += len(data)
        if self._writing:
            return  # the writer sends it once the socket takes more
        if not self._send_some():
            self.scope.cancel()  # it went away
        elif self._queue and self.spawn is not None:
            self._writing = True
            self.spawn(self._write)

    def drop(self, reason: str) -> None:
        self.dropped = reason
        self.scope.cancel()

    @property
    def idle(self) -> bool:
        return not self._queue

    async def drained(self) -> None:
        """Return once everything queued so far was sent."""
        while self._queue:
            self._emptied = anyio.Event()
            await self._emptied.wait()

    async def _write(self) -> None:
        """Send the rest of the outbox as the socket takes it."""
        try:
            while self._queue:
                await anyio.wait_writable(self.sock)
                if not self._send_some():
                    self.scope.cancel()
                    return
        finally:
            self._writing = False

    def _send_some(self) -> bool:
        """Send what the socket takes now; False once the peer is gone."""
        while self._queue:
            head = self._queue[0]
            try:
                sent = self.sock.send(memoryview(head)[self._sent :])
            except BlockingIOError:
                return True
            except OSError:  # EPIPE, ECONNRESET: the client went away
                return False
            self._sent += sent
            if self._sent == len(head):
                self._queue.popleft()
                self._queued -= len(head)
                self._sent = 0
        self._emptied.set()
        return True

    def flush_now(self) -> None:
        """Whatever fits in the socket buffer, without waiting (at close)."""
        with contextlib.suppress(OSError):
            self._send_some()


class ControlServer:
    def __init__(
        self,
        state: StateDir,
        handler: Handler,
        hub: EventHub,
        log: FilteringBoundLogger,
        *,
        on_listening: Callable[[], None] | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.handler = handler
        self.hub = hub
        self.log = log
        self._on_listening = on_listening
        self._on_closed = on_closed
        self._clients: set[Client] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._full = False
        self._accept_failing = False
        self.budget = Budget()

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Listen on control.sock until cancelled; started once it accepts connections."""
        path = str(self.state.path / unixsock.SOCKET_NAME)
        listener = None
        delay = ACCEPT_RETRY_S
        waiting = False  # the daemon was let go on without its socket
        while listener is None:
            try:
                listener = unixsock.bind(self.state.fd, str(self.state.path), BACKLOG)
            except OSError as exc:  # the daemon still supervises; it just cannot be controlled
                if not waiting:
                    self.log.error("control_unavailable", path=path, error=exc.strerror or str(exc))
                    task_status.started()
                    waiting = True
                if exc.errno not in _ACCEPT_SHORTAGE:
                    return
                # Out of fds (or buffers) passes: try again, bounded apart, until it works.
                await anyio.sleep(delay)
                delay = min(delay * 2, BIND_RETRY_MAX_S)
        try:
            if self._on_listening is not None:
                await workers.run_sync(self._on_listening)  # an fsync: off the loop
            self.log.info("control_listening", path=path)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if not waiting:
                    task_status.started()
                await self._accept(listener, tg)
        finally:
            self._tg = None
            if self._on_closed is not None:
                self._on_closed()
            self.state.remove(unixsock.SOCKET_NAME)
            anyio.notify_closing(listener)
            listener.close()

    # -- connections ---------------------------------------------------------------------------

    async def _accept(self, listener: socket.socket, tg: anyio.abc.TaskGroup) -> None:
        ready = False  # the backlog may hold more: accept until it is empty, then wait
        while True:
            if not ready:
                await anyio.wait_readable(listener)
            ready = True
            await self.budget.turn()
            began = time.perf_counter()
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                ready = False
                continue
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if not self._accept_failing:  # once per streak: a shortage lasts
                    self.log.error("control_accept_failed", error=exc.strerror or str(exc))
                self._accept_failing = True
                if exc.errno in _ACCEPT_SHORTAGE:
                    await anyio.sleep(ACCEPT_RETRY_S)
                ready = False
                continue
            self._accept_failing = False
            sock.setblocking(False)
            client = self._admit(sock)
            if client is not None:
                self._clients.add(client)
                tg.start_soon(self._run_client, client)
            self.budget.charge(began)
            await anyio.lowlevel.checkpoint()  # a flood of connections shares the loop

    def _admit(self, sock: socket.socket) -> Client | None:
        """A Client for an accepted socket of our uid; otherwise an error line and close."""
        try:
            pid, uid = unixsock.peer_credentials(sock)
        except OSError:
            pid, uid = None, None
        if uid != os.getuid():
            self.log.warning("control_peer_refused", pid=pid, uid=uid)
            _refuse(sock, ErrorCode.FORBIDDEN, "only the daemon's own user may use this socket")
            return None
        if len(self._clients) >= MAX_CLIENTS:
            if not self._full:
                self.log.warning("control_connections_full", limit=MAX_CLIENTS)
            self._full = True
            _refuse(sock, ErrorCode.BUSY, f"{MAX_CLIENTS} clients are connected; retry later")
            return None
        self._full = False
        return Client(sock, pid)

    async def _run_client(self, client: Client) -> None:
        try:
            with client.scope:
                async with anyio.create_task_group() as tg:
                    client.spawn = tg.start_soon
                    await self._read(client)
                    if not client.idle:
                        # EOF: the client may have shut down only its writing side; it still
                        # gets its replies (bounded: it may also never read them).
                        with anyio.move_on_after(HALF_CLOSE_FLUSH_S):
                            await client.drained()
                    tg.cancel_scope.cancel()
        finally:
            client.spawn = None
            self.hub.unsubscribe(client)
            self._clients.discard(client)
            if client.dropped is not None:
                self.log.warning("control_client_dropped", pid=client.pid, reason=client.dropped)
            client.flush_now()
            anyio.notify_closing(client.sock)
            client.sock.close()

    async def _read(self, client: Client) -> None:
        """Handle request lines until EOF (or until the connection is dropped)."""
        pending = bytearray()
        discarding = False  # inside an oversized line: skip to its end
        while True:
            await anyio.wait_readable(client.sock)
            await self.budget.turn()
            began = time.perf_counter()
            try:
                data = client.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if not data:
                return
            pending += data
            while True:
                newline = pending.find(b"\n")
                if newline < 0:
                    if len(pending) > protocol.MAX_REQUEST_BYTES:
                        if not discarding:
                            client.send(_too_large().reply())
                        discarding = True
                        pending.clear()
                    break
                line = bytes(pending[:newline])
                del pending[: newline + 1]
                if discarding:
                    discarding = False
                    continue
                self.budget.charge(began)  # the read and split so far
                if line.strip():
                    await self._handle(client, line)  # charges its own part
                if b"\n" in pending:
                    await self.budget.turn()
                    await anyio.lowlevel.checkpoint()  # a burst of requests shares the loop
                began = time.perf_counter()
            self.budget.charge(began)

    # -- requests ------------------------------------------------------------------------------

    async def _handle(self, client: Client, line: bytes) -> None:
        """Answer one request line; its synchronous work is charged to the budget."""
        began = time.perf_counter()
        try:
            request = protocol.parse_request(line)
        except ProtocolError as exc:
            self.log.debug("control_request_rejected", code=exc.code.value, error=exc.message)
            client.send(exc.reply())
            self.budget.charge(began)
            return
        self.log.debug("control_request", cmd=request.cmd.value, names=list(request.names))
        action = request.cmd in protocol.ACTIONS
        if action:
            # What an action waits for (its sidecars' stops and starts) is not the server's.
            self.budget.charge(began)
        try:
            result = await self._result(client, request)
        except ProtocolError as exc:
            client.send(exc.reply(request.id))
        except Exception as exc:  # a bug in a handler: the daemon keeps running
            self.log.exception("control_request_failed", cmd=request.cmd.value)
            client.send(
                protocol.error_reply(
                    request.id, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"[:500]
                )
            )
        else:
            client.send(protocol.ok_reply(request.id, result))
        if not action:
            self.budget.charge(began)

    async def _result(self, client: Client, request: Request) -> object:
        match request.cmd:
            case Command.STATUS:
                return self._status(request.names)
            case Command.SUBSCRIBE:
                # Snapshot, subscription and reply with no await in between: every later change
                # reaches this client as an event, after the reply.
                doc = self._status(request.names)
                client.names = frozenset(request.names) if request.names else None
                self.hub.subscribe(client)
                return doc
            case Command.START | Command.STOP | Command.RESTART:
                return await self._detached(self.handler.act, request.cmd, request.names)

    def _status(self, names: Sequence[str]) -> dict[str, object]:
        doc = self.handler.status(names)
        daemon = doc.get("supervisor")
        if isinstance(daemon, dict):
            doc["supervisor"] = {**daemon, "clients": len(self._clients)}
        return doc

    async def _detached(
        self,
        action: Callable[[Command, Sequence[str]], Awaitable[list[dict[str, object]]]],
        cmd: Command,
        names: Sequence[str],
    ) -> object:
        """Run an action in the server's task group: a client that goes away mid-restart does
        not cancel it half-way (the sidecar would stay stopped)."""
        tg = self._tg
        if tg is None:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the daemon is stopping")
        done = anyio.Event()
        outcome: list[object] = []
        failure: list[Exception] = []

        async def run() -> None:
            try:
                outcome.append(await action(cmd, names))
            except Exception as exc:
                failure.append(exc)
            finally:
                done.set()

        tg.start_soon(run)
        await done.wait()
        if failure:
            raise failure[0]
        if not outcome:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "the daemon is stopping")
        return outcome[0]


def _too_large() -> ProtocolError:
    return ProtocolError(
        ErrorCode.TOO_LARGE, f"a request line is at most {protocol.MAX_REQUEST_BYTES} bytes"
    )


def _refuse(sock: socket.socket, code: ErrorCode, message: str) -> None:
    with contextlib.suppress(OSError):
        sock.send(protocol.encode(protocol.error_reply(None, code, message)))
        # What it already sent is read away: closing with unread data would reset the
        # connection, and a client may see the reset before the reply.
        for _ in range(16):
            if not sock.recv(READ_CHUNK):
                break
    sock.close()
