"""The hold of a ready child: until it exits, or its health checks (health.py) or its sd_notify
watchdog find it unhealthy; an unhealthy child is stopped (stop signal, SIGKILL after
`stop.timeout`) and the attempt ends with the reason."""

from __future__ import annotations

import functools
import signal
from collections.abc import Awaitable, Callable, Mapping

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import HealthKind, SidecarConfig
from supervisor.system import cgroups, children, notifysock


async def hold_ready(
    config: SidecarConfig,
    child: children.Child,
    log: FilteringBoundLogger,
    *,
    held: Callable[[], None],
    healthy: Callable[[], None],
    notify: notifysock.NotifySocket | None,
    isolation: cgroups.Isolation | None,
    check_env: Callable[[], Mapping[str, str]],
) -> str | None:
    """Until the child exits (None), or is found unhealthy (why; it is stopped by then).
    `held` once readiness lasted `restart.reset_after`; `healthy` on each passed check."""
    unhealthy: list[str] = []
    async with anyio.create_task_group() as hold:

        async def until_exit() -> None:
            await child.wait_exit()
            hold.cancel_scope.cancel()

        async def until_held() -> None:
            await anyio.sleep(config.restart.reset_after_s)
            held()

        async def until_unhealthy(watch: Callable[[], Awaitable[str | None]]) -> None:
            reason = await watch()
            if reason is not None:
                unhealthy.append(reason)
                hold.cancel_scope.cancel()

        hold.start_soon(until_exit)
        hold.start_soon(until_held)
        match config.health.probe:
            case HealthKind.NONE:
                healthy()
            case HealthKind.NOTIFY:
                watchdog = functools.partial(
                    _watch_watchdog, config, child, log, healthy=healthy, notify=notify
                )
                hold.start_soon(until_unhealthy, watchdog)
            case _:
                checks = functools.partial(
                    _watch_health,
                    config,
                    child,
                    log,
                    healthy=healthy,
                    isolation=isolation,
                    check_env=check_env,
                )
                hold.start_soon(until_unhealthy, checks)
    if unhealthy and child.status is None:
        with anyio.CancelScope(shield=True):
            # A stopped (SIGSTOP) child handles no stop signal until it is continued.
            child.signal_group(signal.SIGCONT)
            await child.stop(config.stop.signal, config.stop.timeout_s)
    return unhealthy[0] if unhealthy else None


async def _watch_health(
    config: SidecarConfig,
    child: children.Child,
    log: FilteringBoundLogger,
    *,
    healthy: Callable[[], None],
    isolation: cgroups.Isolation | None,
    check_env: Callable[[], Mapping[str, str]],
) -> str | None:
    env = check_env()
    from supervisor.sidecar import health  # only sidecars that have health checks need it

    cgroup = isolation.check(config.name) if isolation is not None else None
    reason, failures = await health.watch(config, env, log, healthy, cgroup=cgroup)
    if child.exited:
        return None  # it crashed meanwhile: an exit, not a hang
    log.warning("sidecar_unhealthy", pid=child.pid, failures=failures, reason=reason)
    return f"unhealthy: {failures} health checks failed in a row; last: {reason}"


async def _watch_watchdog(
    config: SidecarConfig,
    child: children.Child,
    log: FilteringBoundLogger,
    *,
    healthy: Callable[[], None],
    notify: notifysock.NotifySocket | None,
) -> str | None:
    """`health.probe = "notify"`: a child silent for `watchdog` seconds is unhealthy."""
    watchdog_s = config.health.watchdog_s
    if notify is None or watchdog_s is None:
        raise ValueError("a notify health check needs its socket and watchdog")
    while True:
        with anyio.move_on_after(watchdog_s) as silence:
            await notify.pinged()
        if silence.cancelled_caught:
            break
        healthy()
    if child.exited:
        return None
    unhealthy = f"unhealthy: no WATCHDOG=1 within {watchdog_s:g}s (health.watchdog)"
    log.warning("sidecar_unhealthy", pid=child.pid, failures=1, reason=unhealthy)
    return unhealthy
