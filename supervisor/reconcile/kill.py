"""Killing a port holder safely (SPEC 5.5): identity re-checked before every signal.

On Linux the holder is pinned with a pidfd: once the pidfd is open and the create time still
matches, every signal through it reaches that very process, never a recycled pid (psutil's create
time alone has a 10 ms granularity window). Its group is signalled by groups.py's rule: through
that pidfd (PIDFD_SIGNAL_PROCESS_GROUP); where the kernel lacks it, member by member, each
re-verified — a holder is not our child, so its leader may be reaped at any moment and a killpg
by number could reach a stranger.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from supervisor.system import exitwatch, groups, net, procs, proctime, workers

PORT_RELEASE_TIMEOUT_S = 5.0
KILL_WAIT_S = 5.0


class KillAborted(Exception):
    """The holder changed identity (or stopped holding the port) before a signal was sent."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"kill of pid {pid} aborted: {reason}")
        self.pid = pid
        self.reason = reason


@dataclass(frozen=True)
class KillResult:
    pid: int
    escalated: bool  # SIGKILL was needed
    port_released: bool


class _Target:
    """A process pinned for signalling: a pidfd on Linux, pid + create time elsewhere."""

    def __init__(self, pid: int, create_time: float) -> None:
        self.pid = pid
        self.create_time = create_time
        try:
            self.exit = exitwatch.open_exit_handle(pid)
        except ProcessLookupError:
            raise KillAborted(pid, "the process is gone") from None
        # On Linux the exit handle is a pidfd: signals sent through it reach this very process.
        linux = hasattr(signal, "pidfd_send_signal")
        self.pidfd = self.exit.pidfd if self.exit is not None and linux else None
        self.verify()

    def verify(self) -> None:
        """Abort unless the pid still names the process we classified."""
        current = procs.create_time(self.pid)
        if current is None or not proctime.same_create_time(current, self.create_time):
            raise KillAborted(self.pid, "the pid now names another process (create time changed)")

    def exited(self) -> bool:
        if self.exit is not None:
            return self.exit.ready()
        return not proctime.is_alive(self.pid, self.create_time)

    def send(self, sig: int, *, group: bool) -> None:
        if group:
            try:
                groups.signal_group(self.pid, sig, pidfd=self.pidfd, leader_unreaped=False)
                return
            except groups.GroupUnsafe:
                self._send_to_members(sig)
                return
        self._send_to_leader(sig)

    def _send_to_leader(self, sig: int) -> None:
        if self.exited():
            return
        if self.pidfd is None:
            self.verify()  # elsewhere: re-verify immediately before os.kill
        with contextlib.suppress(ProcessLookupError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)

    def _send_to_members(self, sig: int) -> None:
        """The group, one verified process at a time (no pidfd group signals here).

        Listed first, the leader checked after: a leader that has not exited by then held its
        pid (the group id) through the whole listing, so everything listed is in *its* group.
        Once it has exited it may have been reaped (it is not our child) and its number taken
        by a stranger that called setsid(): then the "group" is the stranger's, and nothing is
        sent.
        """
        members = procs.group_members(self.pid)
        if self.exited():
            return
        self._send_to_leader(sig)
        for pid in members:
            if pid == self.pid:
                continue
            created = procs.create_time(pid)
            if created is None:
                continue
            try:
                member = exitwatch.open_exit_handle(pid)
            except ProcessLookupError:
                continue
            try:
                # Still the process we listed, still in this group: then signal it.
                again = procs.create_time(pid)
                if again is None or not proctime.same_create_time(again, created):
                    continue
                if procs.process_group(pid) != self.pid:
                    continue
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if member is not None and member.pidfd is not None:
                        signal.pidfd_send_signal(member.pidfd, sig)
                    else:
                        os.kill(pid, sig)
            finally:
                if member is not None:
                    member.close()

    async def wait_exit(self, timeout_s: float) -> bool:
        with anyio.move_on_after(timeout_s):
            if self.exit is not None:
                await self.exit.wait()
                return True
            delay = 0.005
            while not self.exited():
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.1)
            return True
        return self.exited()

    def close(self) -> None:
        if self.exit is not None:
            self.exit.close()


async def kill_process(
    pid: int,
    create_time: float,
    *,
    stop_signal: int,
    stop_timeout_s: float,
    still_ours: Callable[[], bool],
) -> bool:
    """Stop `pid` (its group when it leads one) and SIGKILL it after the timeout.

    `still_ours` re-checks the classification just before the first signal; a mismatch raises
    `KillAborted`. Returns True if SIGKILL was needed.
    """
    target = _Target(pid, create_time)
    try:
        # The re-check scans /proc: a worker thread, off the event loop.
        if not await workers.run_sync(still_ours):
            raise KillAborted(pid, "it is no longer classified as ours")
        target.verify()
        group = procs.process_group(pid) == pid
        target.send(stop_signal, group=group)
        if await target.wait_exit(stop_timeout_s):
            # Not our child: its parent reaps it at once, so after it exits its pid (and group
            # id) may be recycled; no group signal is sent past this point.
            return False
        target.send(signal.SIGKILL, group=group)
        await target.wait_exit(KILL_WAIT_S)
        return True
    finally:
        target.close()


async def stop_left(
    processes: Sequence[tuple[int, float]], *, stop_signal: int, stop_timeout_s: float
) -> list[int]:
    """Stop whichever of `processes` (pid, create time; proven ours when listed) still runs,
    concurrently; the pids that had to be stopped. Identity is re-checked before each signal."""
    left = [
        (pid, created)
        for pid, created in processes
        if await workers.run_sync(proctime.is_alive, pid, created)
    ]
    stopped: list[int] = []

    async def stop(pid: int, created: float) -> None:
        with contextlib.suppress(KillAborted):
            await kill_process(
                pid,
                created,
                stop_signal=stop_signal,
                stop_timeout_s=stop_timeout_s,
                still_ours=functools.partial(proctime.is_alive, pid, created),
            )
            stopped.append(pid)

    async with anyio.create_task_group() as tg:
        for pid, created in left:
            tg.start_soon(stop, pid, created)
    return sorted(stopped)


async def kill_holder(
    pid: int,
    create_time: float,
    port: int,
    *,
    stop_signal: int,
    stop_timeout_s: float,
    still_ours: Callable[[], bool],
) -> KillResult:
    """Kill the holder of `port` (as `kill_process`), then wait until the port is released."""

    def still_holding_and_ours() -> bool:
        if pid not in net.pids_listening(port, [pid]):
            raise KillAborted(pid, f"it no longer listens on port {port}")
        return still_ours()

    escalated = await kill_process(
        pid,
        create_time,
        stop_signal=stop_signal,
        stop_timeout_s=stop_timeout_s,
        still_ours=still_holding_and_ours,
    )
    # Another holder still on the port is found by the next preflight.
    released = await wait_port_released(port)
    return KillResult(pid=pid, escalated=escalated, port_released=released)


async def wait_port_released(port: int, timeout_s: float = PORT_RELEASE_TIMEOUT_S) -> bool:
    """Wait (bounded) until nothing listens on `port`: True only when a lookup says so."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        try:
            if not await net.find_listeners_async(port):
                return True
        except net.LookupFailed:
            pass  # cannot tell: not released as far as we know
        if time.monotonic() >= deadline:
            return False
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.05)
