"""The async client (on anyio; tested on asyncio): the same verbs as the blocking one, events as an
async iterator. Finding or launching the daemon is blocking work: it runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisor.client.launch import LaunchOptions, launch_or_attach, running_daemon
from supervisor.client.records import (
    ActionResult,
    Event,
    Readiness,
    Sidecar,
    Status,
    action_results,
)
from supervisor.client.sync import stop_child
from supervisor.control import client as control
from supervisor.control import protocol
from supervisor.control.protocol import Command
from supervisor.errors import ControlError, NoAnswerError, NotRunningError, WaitTimeoutError

_LOST = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError)


class AsyncConnection:
    """A JSON-lines connection to a daemon's control.sock, on anyio streams."""

    def __init__(self, daemon: control.RunningDaemon, stream: anyio.abc.SocketStream) -> None:
        self.daemon = daemon
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._exchange = control.Exchange(daemon)

    @classmethod
    async def open(
        cls, daemon: control.RunningDaemon, wait_s: float = control.CONNECT_WAIT_S
    ) -> AsyncConnection:
        """Connect; while the daemon lives but does not listen yet (it is starting), retry."""
        deadline = anyio.current_time() + wait_s
        delay = 0.005
        while True:
            try:
                # A Unix connect does not block (a listening socket accepts or refuses at once).
                sock = control.connect_socket(daemon)
            except OSError as exc:
                expired = anyio.current_time() >= deadline
                error = control.connect_failure(daemon, exc, wait_s, expired=expired)
                if error is not None:
                    raise error from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.1)
                continue
            sock.setblocking(False)
            return cls(daemon, await anyio.abc.UNIXSocketStream.from_socket(sock))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def request(
        self,
        cmd: Command,
        names: Sequence[str] = (),
        timeout_s: float | None = control.REPLY_TIMEOUT_S,
    ) -> object:
        """Send a request and return its result; its error as the matching SupervisorError;
        NoAnswerError after `timeout_s`."""
        try:
            with anyio.fail_after(timeout_s):
                return await self._roundtrip(cmd, names)
        except TimeoutError:
            raise NoAnswerError(
                self.daemon.state_dir, self.daemon.pid, cmd, timeout_s or 0.0
            ) from None

    async def _roundtrip(self, cmd: Command, names: Sequence[str]) -> object:
        request_id, line = self._exchange.request(cmd, names)
        try:
            await self._stream.send(line)
        except _LOST:
            raise NotRunningError(self.daemon.state_dir) from None
        while True:
            message = await self._receive()
            if message is None:
                raise NotRunningError(self.daemon.state_dir)  # it closed: it is exiting
            if (reply := self._exchange.reply(message, request_id)) is not None:
                return reply.result

    async def events(self) -> AsyncIterator[dict[str, object]]:
        """Events in order until the daemon closes the connection."""
        while self._exchange.events:
            yield self._exchange.events.popleft()
        while (message := await self._receive()) is not None:
            if "event" in message:
                yield message

    async def _receive(self) -> dict[str, object] | None:
        """The next JSON object line; None at EOF."""
        while True:
            try:
                line = await self._reader.receive_until(b"\n", control.MAX_LINE_BYTES)
            except _LOST:
                return None
            except anyio.DelimiterNotFound:
                raise ControlError(
                    self.daemon.state_dir, "the daemon sent an oversized line"
                ) from None
            if (message := protocol.decode(line)) is not None:
                return message


class AsyncClient:
    """A running daemon, from async code: `await AsyncClient.connect()` or
    `await AsyncClient.launch(state_dir, config=...)`; `async with client:` closes it."""

    def __init__(
        self,
        daemon: control.RunningDaemon,
        child: subprocess.Popen[bytes] | None = None,
        *,
        timeout_s: float = control.REPLY_TIMEOUT_S,
    ) -> None:
        self.daemon = daemon
        self.child = child
        self.timeout_s = timeout_s
        self._conn: AsyncConnection | None = None
        self._lock = anyio.Lock()  # requests on the shared connection take turns

    @classmethod
    async def connect(
        cls,
        state_dir: str | Path | None = None,
        *,
        config: str | Path | None = None,
        timeout_s: float = control.REPLY_TIMEOUT_S,
    ) -> AsyncClient:
        """See Client.connect."""
        daemon = await anyio.to_thread.run_sync(running_daemon, state_dir, config)
        return cls(daemon, timeout_s=timeout_s)

    @classmethod
    async def launch(
        cls,
        state_dir: str | Path,
        *,
        config: str | Path | None = None,
        command: Sequence[str] | None = None,
        log_file: str | Path | None = None,
        exit_with_parent: bool = True,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> AsyncClient:
        """See Client.launch."""
        options = LaunchOptions.build(
            state_dir,
            config,
            log_file,
            command,
            exit_with_parent=exit_with_parent,
            args=tuple(args),
            env=env,
        )
        run = functools.partial(launch_or_attach, options, timeout_s)
        daemon, child = await anyio.to_thread.run_sync(run)
        return cls(daemon, child)

    @property
    def state_dir(self) -> Path:
        return self.daemon.state_dir

    @property
    def launched(self) -> bool:
        return self.child is not None

    async def _request(self, cmd: Command, names: Sequence[str]) -> object:
        async with self._lock:
            if self._conn is None:
                self._conn = await AsyncConnection.open(self.daemon)
            return await self._conn.request(cmd, names, timeout_s=self.timeout_s)

    async def status(self, *names: str) -> Status:
        return Status.from_document(await self._request(Command.STATUS, names))

    async def start(self, *names: str) -> list[ActionResult]:
        return action_results(await self._request(Command.START, names))

    async def stop(self, *names: str) -> list[ActionResult]:
        return action_results(await self._request(Command.STOP, names))

    async def restart(self, *names: str) -> list[ActionResult]:
        return action_results(await self._request(Command.RESTART, names))

    async def wait(self, *names: str, timeout_s: float | None = None) -> list[Sidecar]:
        """See Client.wait."""
        conn = await AsyncConnection.open(self.daemon)
        readiness: Readiness | None = None
        try:
            with anyio.fail_after(timeout_s):
                snapshot = await conn.request(Command.SUBSCRIBE, names, timeout_s=None)
                readiness = Readiness(names, snapshot, self.state_dir)
                if (ready := readiness.done()) is not None:
                    return ready
                async for event in conn.events():
                    readiness.update(event)
                    if (ready := readiness.done()) is not None:
                        return ready
        except TimeoutError:
            pending = readiness.pending() if readiness is not None else {}
            raise WaitTimeoutError(timeout_s or 0.0, pending, self.state_dir) from None
        finally:
            await conn.aclose()
        raise NotRunningError(self.state_dir)

    async def url(self, name: str) -> str | None:
        return (await self.status(name))[name].url

    @contextlib.asynccontextmanager
    async def subscribe(self, *names: str) -> AsyncIterator[tuple[Status, AsyncIterator[Event]]]:
        """The status of `names` (default: all) and the events after it, with no gap between."""
        conn = await AsyncConnection.open(self.daemon)
        try:
            snapshot = await conn.request(Command.SUBSCRIBE, names, timeout_s=self.timeout_s)

            async def events() -> AsyncIterator[Event]:
                async for message in conn.events():
                    yield Event.from_message(message)

            yield Status.from_document(snapshot), events()
        finally:
            await conn.aclose()

    async def events(self, *names: str) -> AsyncIterator[Event]:
        """Every state change of `names` (default: all) from now on, until the daemon exits."""
        async with self.subscribe(*names) as (_, events):
            async for event in events:
                yield event

    async def aclose(self, *, stop_daemon: bool = True) -> None:
        """See Client.close."""
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None
        if stop_daemon and self.child is not None and self.child.poll() is None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(stop_child, self.child)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
