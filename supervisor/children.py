"""Our own child processes: spawn in a new session, event-driven exit, group stop.

Exit is noticed without polling: a pidfd on Linux, kqueue NOTE_EXIT on macOS (polling only as a
last resort). The leader is reaped only after leftovers of its process group were signalled: while
the leader is an unreaped zombie its pid - and so the group id - cannot be recycled, so `killpg`
can never hit a stranger.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from supervisor import execshim, exitwatch, procs


class SpawnError(Exception):
    """The command could not be started (not found, not executable, bad cwd)."""

    def __init__(self, argv0: str, reason: str) -> None:
        super().__init__(f"cannot start {argv0}: {reason}")
        self.argv0 = argv0
        self.reason = reason


@dataclass(frozen=True)
class ExitStatus:
    code: int | None
    signal: int | None


class Child:
    """One spawned process that leads its own session and process group."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child leads its own group
        self._exited = False
        self.sigkilled = False  # SIGKILL was sent to the group (escalation or forced shutdown)
        self.status: ExitStatus | None = None
        try:
            self._exit_handle = exitwatch.open_exit_handle(self.pid)
        except ProcessLookupError:  # cannot happen before we reap it, but never crash on it
            self._exit_handle = None

    @functools.cached_property
    def create_time(self) -> float:
        # Read lazily: right after the fork, /proc/PID/stat blocks until the child's exec is
        # done (~3 ms), which would sit on the respawn path. By readiness it is instant.
        return procs.create_time(self.pid) or 0.0

    @property
    def exited(self) -> bool:
        """True once the process has ended (it may still be an unreaped zombie)."""
        if not self._exited:
            self._exited = _is_exited(self.pid, self.popen)
        return self._exited

    async def wait_exit(self) -> None:
        """Return once the process has ended; does not reap it."""
        if self.exited:
            return
        if self._exit_handle is not None:
            await self._exit_handle.wait()
        else:
            delay = 0.005
            while not self.exited:
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.25)
        self._exited = True

    def reap(self) -> ExitStatus:
        """Collect the exit status (the process must have ended) and release the exit handle."""
        code = self.popen.wait()
        self.status = ExitStatus(code=code, signal=None) if code >= 0 else ExitStatus(None, -code)
        self._close_exit_handle()
        return self.status

    def _close_exit_handle(self) -> None:
        if self._exit_handle is not None:
            self._exit_handle.close()
            self._exit_handle = None

    def signal_group(self, sig: int) -> bool:
        """Signal the whole group; safe until the leader is reaped (its pid cannot be reused)."""
        if self.status is not None:
            raise RuntimeError("the group of a reaped child must not be signalled")
        if sig == signal.SIGKILL:
            self.sigkilled = True
        return procs.signal_group(self.pgid, sig)

    def group_members(self) -> list[int]:
        return procs.group_members(self.pgid)  # living ones: an exited leader is a zombie

    async def stop(self, sig: int, timeout_s: float) -> bool:
        """Signal the group, wait up to `timeout_s` for all of it, then SIGKILL; reap the leader.

        Returns True if SIGKILL was needed. Call it shielded from cancellation.
        """
        if self.status is None:
            self.signal_group(sig)
            with anyio.move_on_after(timeout_s) as scope:
                await self.wait_exit()
                # The leader is gone; give the rest of its group the remaining time.
                delay = 0.005
                while self.group_members():
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.1)
            if scope.cancelled_caught or self.group_members():
                self.signal_group(signal.SIGKILL)
                await self.wait_exit()
            self.reap()
        return self.sigkilled

    def finish(self) -> ExitStatus:
        """After the leader exited: SIGKILL what is left of its group, reap, return the status.

        One killpg, no process scan: the unreaped leader keeps the group id ours.
        """
        if self.status is not None:
            return self.status
        procs.signal_group(self.pgid, signal.SIGKILL)
        return self.reap()

    def close(self) -> None:
        """Release fds (exit handle, pipes); the process must have been reaped or be abandoned."""
        self._close_exit_handle()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _is_exited(pid: int, popen: subprocess.Popen[bytes]) -> bool:
    if popen.returncode is not None:
        return True
    try:
        waited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return waited is not None


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    capture_output: bool = True,
    listen_fd: int | None = None,
) -> Child:
    """Start `argv` (never through a shell) in a new session with stdin on /dev/null.

    With `listen_fd`, the child gets that socket as fd 3 and LISTEN_PID = its own pid, through
    the exec shim (execshim.py); `argv` itself is still never parsed by a shell.
    """
    command: list[str] = list(argv)
    stdin: int = subprocess.DEVNULL
    if listen_fd is not None:
        command, stdin = execshim.wrap(argv, env), listen_fd
    try:
        if listen_fd is not None and (error := execshim.lookup_error(argv[0], cwd, env)):
            raise error
        popen = subprocess.Popen(
            command,
            cwd=cwd,
            env=dict(env),
            stdin=stdin,
            stdout=subprocess.PIPE if capture_output else subprocess.DEVNULL,
            stderr=subprocess.PIPE if capture_output else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        missing = exc.filename if exc.filename else argv[0]
        what = (
            "working directory not found"
            if cwd is not None and missing == str(cwd)
            else ("command not found")
        )
        raise SpawnError(argv[0], f"{what}: {missing}") from None
    except PermissionError as exc:
        raise SpawnError(argv[0], f"permission denied: {exc.filename or argv[0]}") from None
    except OSError as exc:
        raise SpawnError(argv[0], exc.strerror or str(exc)) from None
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
    return Child(popen)
