"""The blocking client: one daemon, its verbs, its events."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from supervisor.client.launch import LaunchOptions, launch_or_attach, running_daemon
from supervisor.client.records import ActionResult, Event, Sidecar, Status, action_results
from supervisor.control import client as control
from supervisor.control.protocol import Command
from supervisor.errors import NoAnswerError

STOP_WAIT_S = 30.0  # a daemon we launched stops its sidecars (stop.timeout each, then SIGKILL)


def stop_child(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM our daemon and wait; SIGKILL if it does not exit in STOP_WAIT_S."""
    child.terminate()
    try:
        child.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class Client:
    """A running daemon: `Client.connect()` to one that runs, `Client.launch()` to run one.

    Requests share one connection; `wait` and `events` open their own (a subscription).
    Use it as a context manager, or call `close()`.
    """

    def __init__(
        self,
        daemon: control.RunningDaemon,
        child: subprocess.Popen[bytes] | None = None,
        *,
        timeout_s: float = control.REPLY_TIMEOUT_S,
    ) -> None:
        self.daemon = daemon
        self.child = child  # the daemon process when this client launched it, else None
        self.timeout_s = timeout_s
        self._conn: control.Connection | None = None

    @classmethod
    def connect(
        cls,
        state_dir: str | Path | None = None,
        *,
        config: str | Path | None = None,
        timeout_s: float = control.REPLY_TIMEOUT_S,
    ) -> Client:
        """The daemon of `state_dir` (or of `config`'s state dir); with neither, the one running
        daemon of the registry (SeveralRunningError if there are more). NotRunningError if none."""
        return cls(running_daemon(state_dir, config), timeout_s=timeout_s)

    @classmethod
    def launch(
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
    ) -> Client:
        """Launch `supervisor run` on `state_dir`, or attach to the daemon that runs there (our
        launch exits 75). `client.launched` says which. LaunchFailedError if it cannot start."""
        options = LaunchOptions.build(
            state_dir,
            config,
            log_file,
            command,
            exit_with_parent=exit_with_parent,
            args=tuple(args),
            env=env,
        )
        daemon, child = launch_or_attach(options, timeout_s)
        return cls(daemon, child)

    @property
    def state_dir(self) -> Path:
        return self.daemon.state_dir

    @property
    def launched(self) -> bool:
        return self.child is not None

    def _request(self, cmd: Command, names: Sequence[str]) -> object:
        if self._conn is None:
            self._conn = control.Connection.open(self.daemon)
        try:
            return self._conn.request(cmd, names, timeout_s=self.timeout_s)
        except TimeoutError:
            raise NoAnswerError(self.state_dir, self.daemon.pid, cmd, self.timeout_s) from None

    def status(self, *names: str) -> Status:
        return Status.from_document(self._request(Command.STATUS, names))

    def start(self, *names: str) -> list[ActionResult]:
        return action_results(self._request(Command.START, names))

    def stop(self, *names: str) -> list[ActionResult]:
        return action_results(self._request(Command.STOP, names))

    def restart(self, *names: str) -> list[ActionResult]:
        return action_results(self._request(Command.RESTART, names))

    def wait(self, *names: str, timeout_s: float | None = None) -> list[Sidecar]:
        """Until each of `names` (default: every sidecar) is ready; their records, in order.
        SidecarDownError when one is failed or exited, WaitTimeoutError after `timeout_s`."""
        with control.Connection.open(self.daemon) as conn:
            return [Sidecar.from_record(r) for r in control.wait_ready(conn, names, timeout_s)]

    def url(self, name: str) -> str | None:
        """The sidecar's URL (http://host:port/path or tcp://host:port), None without a port."""
        return self.status(name)[name].url

    @contextlib.contextmanager
    def subscribe(self, *names: str) -> Iterator[tuple[Status, Iterator[Event]]]:
        """The status of `names` (default: all) and the events after it, with no gap between."""
        with control.Connection.open(self.daemon) as conn:
            try:
                snapshot = conn.request(Command.SUBSCRIBE, names, timeout_s=self.timeout_s)
            except TimeoutError:
                raise NoAnswerError(
                    self.state_dir, self.daemon.pid, "subscribe", self.timeout_s
                ) from None
            yield Status.from_document(snapshot), (Event.from_message(m) for m in conn.events())

    def events(self, *names: str) -> Iterator[Event]:
        """Every state change of `names` (default: all) from now on, until the daemon exits."""
        with self.subscribe(*names) as (_, events):
            yield from events

    def close(self, *, stop_daemon: bool = True) -> None:
        """Close the connection; a daemon this client launched is stopped (SIGTERM) and waited
        for, unless `stop_daemon` is false (it then stops when this process exits, if it was
        launched with exit_with_parent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if stop_daemon and self.child is not None and self.child.poll() is None:
            stop_child(self.child)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
