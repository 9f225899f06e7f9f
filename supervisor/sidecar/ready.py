"""The wait for a spawned child to become ready: its readiness probe (probes.py) raced against
its exit and bounded by `ready.timeout`; a failed start says why."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import SidecarConfig
from supervisor.sidecar import probes
from supervisor.system import children

EXITED_EARLY = "exited before becoming ready"


async def await_ready(
    config: SidecarConfig,
    child: children.Child,
    log: FilteringBoundLogger,
    *,
    signal: anyio.Event | None,
    listen_inode: int | None,
    exec_env: Mapping[str, str],
) -> str | None:
    """None once ready; else why the start failed (exit before ready, or timeout). `signal` is
    the child's own word (a log line matched, READY=1) for the `log` and `notify` probes."""
    failure: list[str] = []
    warned = False

    def stranger() -> None:
        nonlocal warned
        if not warned:
            warned = True
            log.warning(
                "probe_answered_by_stranger",
                port=config.port,
                pid=child.pid,
                detail="the port answers, but the listener is not our child's",
            )

    async with anyio.create_task_group() as race:

        async def watch_exit() -> None:
            await child.wait_exit()
            failure.append(EXITED_EARLY)
            race.cancel_scope.cancel()

        race.start_soon(watch_exit)
        timeout = config.ready.timeout_s
        with anyio.move_on_after(timeout) as probe_scope:
            await probes.wait_ready(
                config,
                child.pid,
                stranger,
                listen_inode=listen_inode,
                signal=signal,
                exec_env=exec_env,
                members=child.cgroup.members if child.cgroup is not None else None,
            )
        if probe_scope.cancelled_caught:
            failure.append(f"not ready within {timeout:g}s (ready.timeout)")
        race.cancel_scope.cancel()
    if not failure and child.exited:
        failure.append(EXITED_EARLY)
    return failure[0] if failure else None
