"""A command that daemonized: it exited and left a process of its own serving the port (nginx
without `daemon off;`, redis --daemonize yes). Each check says so (`sidecar_daemonized`), stops
what it left and returns the reason; None when the child left nothing on the port."""

from __future__ import annotations

import contextlib
import functools
import os
import time

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import SidecarConfig
from supervisor.reconcile.kill import KillAborted, kill_process
from supervisor.system import cgroups, children, net, procs, proctime, reaper, workers

DAEMONIZED_POLL_S = 0.05  # a daemonized server's late bind: as often as a readiness probe


async def check_cgroup(
    config: SidecarConfig, cgroup: cgroups.Cgroup, deadline: float, log: FilteringBoundLogger
) -> str | None:
    """The child exited before ready and left members in its cgroup: if one of them serves
    the port (whenever it binds, until the ready deadline), it daemonized. Its cgroup is
    then stopped whole (stop signal, SIGKILL after stop.timeout)."""
    port = config.port
    if port is None:
        return None
    holder: int | None = None
    with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
        delay = 0.005
        while await workers.run_sync(cgroup.populated):
            listening = await workers.run_sync(net.pids_listening, port, cgroup.members())
            if listening:
                holder = min(listening)
                break
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.1)
    if holder is None:
        return None
    reason = _say(log, holder, port)
    with anyio.CancelScope(shield=True):
        killed = await cgroup.stop(config.stop.signal, config.stop.timeout_s)
    if killed:
        log.info("cgroup_leftovers_killed", count=killed, path=str(cgroup.path))
    return reason


async def check_session(
    config: SidecarConfig, child: children.Child, log: FilteringBoundLogger, *, wait: bool = True
) -> str | None:
    """The child exited before ready: did it leave a process of its own on the port? (Its
    session, or an orphan of it adopted by us as subreaper.) If so, say so and stop it.

    A server may bind after its parent exited (redis, a delayed bind): while something
    born of the child lives, we look again, until `ready.timeout`."""
    port = config.port
    if port is None:
        return None
    born, left = await workers.run_sync(_left_on_port, child.pid, child.create_time, port)
    with anyio.move_on_after(config.ready.timeout_s if wait else 0.0):
        while born and not left:
            await anyio.sleep(DAEMONIZED_POLL_S)
            born, left = await workers.run_sync(_left_on_port, child.pid, child.create_time, port)
    if not left:
        return None
    reason = _say(log, left[0][0], port)
    for holder, holder_created in left:
        with contextlib.suppress(KillAborted):
            await kill_process(
                holder,
                holder_created,
                stop_signal=config.stop.signal,
                stop_timeout_s=config.stop.timeout_s,
                still_ours=functools.partial(_descends, holder, holder_created, child),
            )
    return reason


def exited_zero(pid: int) -> bool:
    """The unreaped child `pid` exited with code 0 (peeked: it stays unreaped for finish())."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return info is not None and info.si_code == os.CLD_EXITED and info.si_status == 0


def _say(log: FilteringBoundLogger, holder: int, port: int) -> str:
    reason = (
        f"it daemonized: it exited and left pid {holder} serving port {port}; run it in the "
        "foreground (nginx: daemon off;  redis: --daemonize no)"
    )
    log.error("sidecar_daemonized", holder_pid=holder, port=port, reason=reason)
    return reason


def _left_on_port(
    child_pid: int, child_created: float, port: int
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """Processes born of the child (its session's, or orphans of it we adopted): those alive,
    and those of them listening on `port`."""
    candidates = set(procs.session_members(child_pid)) | set(reaper.adopted())
    born: dict[int, float] = {}
    for pid in candidates:
        created = procs.create_time(pid)
        if created is not None and (
            created >= child_created or proctime.same_create_time(created, child_created)
        ):
            born[pid] = created
    listening = net.pids_listening(port, born)
    return sorted(born.items()), sorted((pid, born[pid]) for pid in listening)


def _descends(pid: int, created: float, child: children.Child) -> bool:
    """Still that process, and still ours: in the child's session or adopted by us."""
    now = procs.create_time(pid)
    if now is None or not proctime.same_create_time(now, created):
        return False
    return procs.session_id(pid) == child.pid or pid in reaper.adopted()
