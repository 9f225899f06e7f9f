"""Our own child processes: spawn in a new session, event-driven exit, group stop.

Exit is noticed without polling: a pidfd on Linux, kqueue NOTE_EXIT on macOS (polling only as a
last resort). The group is signalled by groups.py's rule: through the leader's pidfd, or with
killpg while we hold the leader unreaped; the leader is reaped only after the leftovers of its
group were signalled.

With a cgroup (cgroups.py), the child joins it before its command runs (the exec shim), and
"its group" is everything in that cgroup as well: the stop signal goes to every member,
SIGKILL is cgroup.kill, and a stop is done when the cgroup is empty.
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

from supervisor.system import execshim, exitwatch, groups, procs, reaper, workers
from supervisor.system.cgroups import Cgroup

# After SIGKILL, how long a stop waits to see the group gone. A process in uninterruptible
# sleep (D state) never dies on time: past this it is abandoned, not waited for forever.
KILL_WAIT_S = 2.0


class SpawnError(Exception):
    """The command could not be started (not found, not executable, bad cwd)."""

    def __init__(self, argv0: str, reason: str, *, fatal: bool = False) -> None:
        super().__init__(f"cannot start {argv0}: {reason}")
        self.argv0 = argv0
        self.reason = reason
        self.fatal = fatal  # ENOENT / EACCES: the program cannot run; retrying will not help


@dataclass(frozen=True)
class ExitStatus:
    code: int | None
    signal: int | None


class Child:
    """One spawned process that leads its own session and process group."""

    def __init__(self, popen: subprocess.Popen[bytes], cgroup: Cgroup | None = None) -> None:
        self.popen = popen
        self.cgroup = cgroup  # its cgroup (it joined before its command ran), or None
        self.leftovers_killed = 0  # members of its cgroup SIGKILLed by finish()
        self.pid = popen.pid
        self.pgid = popen.pid  # start_new_session: the child leads its own group
        self._exited = False
        self.sigkilled = False  # SIGKILL was sent to the group (escalation or forced shutdown)
        self.abandoned = False  # it never died after SIGKILL (D state); left unreaped
        self.status: ExitStatus | None = None
        self._hurry = anyio.Event()  # kill_now(): a running stop skips its grace period
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
        reaper.forget(self.pid)
        self.status = ExitStatus(code=code, signal=None) if code >= 0 else ExitStatus(None, -code)
        self._close_exit_handle()
        return self.status

    def _close_exit_handle(self) -> None:
        if self._exit_handle is not None:
            self._exit_handle.close()
            self._exit_handle = None

    def signal_group(self, sig: int) -> bool:
        """Signal the whole group (groups.py's rule: our leader is unreaped, or its pidfd)."""
        if sig == signal.SIGKILL:
            self.sigkilled = True
        return self._signal_group(sig)

    def _signal_group(self, sig: int, *, cgroup: bool = True) -> bool:
        if self.status is not None:
            raise RuntimeError("the group of a reaped child must not be signalled")
        handle = self._exit_handle
        pidfd = handle.pidfd if handle is not None else None
        sent = groups.signal_group(self.pgid, sig, pidfd=pidfd, leader_unreaped=True)
        if cgroup and self.cgroup is not None:
            # Its group too: before the shim joined the cgroup, the child is only there.
            if sig == signal.SIGKILL:
                return self.cgroup.kill() > 0 or sent
            return self.cgroup.signal_all(sig) > 0 or sent
        return sent

    def group_members(self) -> list[int]:
        members = procs.group_members(self.pgid)  # living ones: an exited leader is a zombie
        if self.cgroup is not None:
            members = sorted(set(members) | set(self.cgroup.members()))
        return members

    def kill_now(self) -> None:
        """SIGKILL the whole group at once; a stop in progress skips what is left of its grace."""
        if self.status is None and not self.abandoned:
            self.signal_group(signal.SIGKILL)
        self._hurry.set()

    async def stop(self, sig: int, timeout_s: float, *, signalled: bool = False) -> bool:
        """Signal the group, wait up to `timeout_s` for all of it, then SIGKILL; reap the leader.

        `signalled`: the caller already sent `sig` (it signals first and logs after). Returns
        True if SIGKILL was needed. Call it shielded from cancellation. Bounded: a group that
        outlives SIGKILL by KILL_WAIT_S is abandoned (`abandoned`), never waited for forever.
        """
        if self.status is not None or self.abandoned:
            return self.sigkilled
        if not signalled:
            self.terminate(sig)
        with anyio.move_on_after(timeout_s) as scope:
            async with anyio.create_task_group() as race:
                race.start_soon(_cancel_when, self._hurry, race.cancel_scope)
                await self.wait_exit()
                # The leader is gone; give the rest of its group the remaining time. The scan
                # reads /proc: it runs in a worker thread, off the event loop.
                delay = 0.005
                while await workers.run_sync(self.group_members):
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 0.1)
                race.cancel_scope.cancel()
        hurried = self._hurry.is_set()
        leftovers = bool(await workers.run_sync(self.group_members))
        if scope.cancelled_caught or hurried or leftovers:
            self.signal_group(signal.SIGKILL)
            with anyio.move_on_after(KILL_WAIT_S):
                await self.wait_exit()
                if self.cgroup is not None:  # stopped means: the cgroup is empty
                    await self.cgroup.wait_empty(KILL_WAIT_S)
        if self.exited:
            self.finish()
        else:
            self.abandoned = True
        return self.sigkilled

    def terminate(self, sig: int) -> bool:
        """Send the stop signal to the group (the first step of a stop); False if it is empty.
        With a cgroup, SIGCONT follows (a stopped member would not act on it until continued)."""
        if self.status is not None:
            return False
        sent = self.signal_group(sig)
        if self.cgroup is not None and sig not in (signal.SIGKILL, signal.SIGCONT):
            self.cgroup.signal_all(signal.SIGCONT)
        return sent

    def finish(self) -> ExitStatus:
        """After the leader exited: SIGKILL what is left of its group, reap, return the status.

        One group signal, no process scan: the unreaped leader keeps the group id ours. With a
        cgroup, cgroup.kill; how many members it had is kept in `leftovers_killed`.
        """
        if self.status is not None:
            return self.status
        if self.cgroup is not None:
            self.leftovers_killed = self.cgroup.kill()
        # Leftovers only: the stop itself did not escalate. The cgroup was just killed: a second
        # cgroup.kill (another read of its members) would add nothing.
        self._signal_group(signal.SIGKILL, cgroup=False)
        return self.reap()

    def close(self) -> None:
        """Release fds (exit handle, pipes); the process must have been reaped or be abandoned."""
        self._close_exit_handle()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


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
    cgroup: Cgroup | None = None,
) -> Child:
    """Start `argv` (never through a shell) in a new session with stdin on /dev/null.

    With `listen_fd`, the child gets that socket as fd 3 and LISTEN_PID = its own pid; with
    `cgroup`, it joins that (existing) cgroup before the command runs. Both through the exec
    shim (execshim.py); `argv` itself is still never parsed by a shell.
    """
    command: list[str] = list(argv)
    stdin: int = subprocess.DEVNULL
    shimmed = listen_fd is not None or cgroup is not None
    if shimmed:
        procs_file = str(cgroup.procs_file) if cgroup is not None else None
        command = execshim.wrap(argv, env, listen=listen_fd is not None, cgroup_procs=procs_file)
    if listen_fd is not None:
        stdin = listen_fd
    try:
        if shimmed and (error := execshim.lookup_error(argv[0], cwd, env)):
            raise error
        popen = reaper.fork_registered(
            lambda: subprocess.Popen(
                command,
                cwd=cwd,
                env=dict(env),
                stdin=stdin,
                stdout=subprocess.PIPE if capture_output else subprocess.DEVNULL,
                stderr=subprocess.PIPE if capture_output else subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            ),
            lambda p: p.pid,
        )
    except FileNotFoundError as exc:
        missing = str(exc.filename) if exc.filename else argv[0]
        what = (
            "working directory not found"
            if cwd is not None and missing == str(cwd)
            else ("command not found")
        )
        raise SpawnError(argv[0], f"{what}: {missing}", fatal=True) from None
    except PermissionError as exc:
        reason = f"permission denied: {exc.filename or argv[0]}"
        raise SpawnError(argv[0], reason, fatal=True) from None
    except OSError as exc:
        raise SpawnError(argv[0], exc.strerror or str(exc)) from None
    for stream in (popen.stdout, popen.stderr):
        if stream is not None:
            os.set_blocking(stream.fileno(), False)
    return Child(popen, cgroup)
