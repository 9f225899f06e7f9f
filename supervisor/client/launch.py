"""Launch `supervisor run` for a state dir, or attach to the daemon that holds it; or find the
running daemon a client names (blocking).

The state dir's lock decides: our launch either becomes the daemon (its supervisor.pid names our
child) or exits 75 because another one holds the lock; then we attach to that one, unless it is
shutting down (the daemon of an app instance that died), in which case we launch again once it
is gone. Any number of clients may race: at most one launch wins, the others attach to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.control import client as control
from supervisor.control.protocol import Command
from supervisor.errors import EXIT_LOCKED, ControlError, LaunchFailedError, NotRunningError

POLL_MAX_S = 0.05
DEFAULT_COMMAND = (sys.executable, "-m", "supervisor")


@dataclass(frozen=True)
class LaunchOptions:
    state_dir: Path
    config: Path | None = None
    command: Sequence[str] = DEFAULT_COMMAND
    log_file: Path | None = None  # default: <state dir's parent>/supervisor.log
    exit_with_parent: bool = True
    args: Sequence[str] = ()
    env: Mapping[str, str] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        state_dir: str | Path,
        config: str | Path | None,
        log_file: str | Path | None,
        command: Sequence[str] | None,
        **rest: Any,
    ) -> LaunchOptions:
        """Paths made absolute (the daemon runs elsewhere than its caller, maybe later)."""

        def absolute(path: str | Path) -> Path:
            return Path(path).expanduser().absolute()

        return cls(
            state_dir=absolute(state_dir),
            config=absolute(config) if config is not None else None,
            log_file=absolute(log_file) if log_file is not None else None,
            command=tuple(command) if command is not None else DEFAULT_COMMAND,
            **rest,
        )

    @property
    def log_path(self) -> Path:
        return self.log_file or self.state_dir.parent / "supervisor.log"

    def argv(self) -> list[str]:
        run = [*self.command, "run", "--state-dir", str(self.state_dir), "--log-format", "json"]
        if self.config is not None:
            run += ["-c", str(self.config)]
        if self.exit_with_parent:
            run.append("--exit-with-parent")
        return [*run, *self.args]


def running_daemon(
    state_dir: str | Path | None, config: str | Path | None
) -> control.RunningDaemon:
    """The daemon of `state_dir` (or of `config`'s state dir); with neither, the one running
    daemon of the registry (SeveralRunningError if there are more). NotRunningError if none."""
    return control.the_daemon(
        None if config is None else str(config), None if state_dir is None else str(state_dir)
    )


def launch_or_attach(
    options: LaunchOptions, timeout_s: float
) -> tuple[control.RunningDaemon, subprocess.Popen[bytes] | None]:
    """The daemon of `options.state_dir`, and our child when we launched it (else None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        child = _spawn(options)
        daemon = _ours(child, options.state_dir, deadline)
        if daemon is not None:
            return daemon, child
        returncode = child.wait()
        if returncode != EXIT_LOCKED:
            raise LaunchFailedError(
                options.state_dir, returncode, options.log_path, _last_line(options.log_path)
            )
        attached = _attach(options.state_dir, deadline)
        if attached is not None:
            return attached, None
        if time.monotonic() >= deadline:
            raise ControlError(
                options.state_dir, f"no supervisor served {options.state_dir} within {timeout_s:g}s"
            )


def _spawn(options: LaunchOptions) -> subprocess.Popen[bytes]:
    log = options.log_path
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as stderr:  # the daemon's log: a file, so that it is always drained
        return subprocess.Popen(
            options.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=dict(options.env) if options.env is not None else None,
        )


def _ours(
    child: subprocess.Popen[bytes], state_dir: Path, deadline: float
) -> control.RunningDaemon | None:
    """Our child once supervisor.pid names it and its socket accepts; None once it exited."""
    delay = 0.005
    while child.poll() is None:
        try:
            daemon = control.find_daemon(state_dir)
        except NotRunningError:
            daemon = None
        if daemon is not None and daemon.pid == child.pid:
            with control.Connection.open(daemon, max(deadline - time.monotonic(), 0.1)):
                return daemon
        if time.monotonic() >= deadline:
            child.terminate()
            child.wait()
            raise ControlError(state_dir, f"supervisor run (pid {child.pid}) did not start in time")
        time.sleep(delay)
        delay = min(delay * 2, POLL_MAX_S)
    return None


def _attach(state_dir: Path, deadline: float) -> control.RunningDaemon | None:
    """The daemon that holds the lock, unless it is on its way out (then None, once it is
    gone, bounded by `deadline`)."""
    try:
        daemon = control.find_daemon(state_dir)
    except NotRunningError:
        # Its supervisor.pid is not written yet, or it has just exited: a moment, then relaunch.
        time.sleep(POLL_MAX_S)
        return None
    try:
        with control.Connection.open(daemon, max(deadline - time.monotonic(), 0.1)) as conn:
            doc = conn.request(Command.SUBSCRIBE)
            supervisor = doc.get("supervisor") if isinstance(doc, dict) else None
            if isinstance(supervisor, dict) and supervisor.get("shutting_down") is not True:
                return daemon
            for _ in conn.events(deadline):  # until it exits
                pass
    except (NotRunningError, TimeoutError):
        pass
    return None


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(max(os.fstat(log.fileno()).st_size - 4096, 0))
            lines = log.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:500] if lines else ""
