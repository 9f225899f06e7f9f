"""Liveness while ready: a tcp, http or exec check every `health.interval`, each bounded by
`health.timeout`; `health.failures` failures in a row make the sidecar unhealthy.

Checks start on a fixed cadence (ready + interval, + 2 intervals, ...), never overlapping (the
config keeps timeout <= interval), so a server that hangs is found unhealthy at most
`interval * failures + timeout` after it hung. An `exec` check runs in its own session; one that
outlives its timeout, or is cancelled (the sidecar is being stopped), is killed with its whole
process group before anything else happens to the sidecar. With a cgroup (the sidecar's
`_check-<name>`, cgroups.py), every check is killed whole when it ends, whatever it forked:
a check that double-forks leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import assert_never

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import HealthKind, SidecarConfig
from supervisor.sidecar import probes
from supervisor.sidecar.execcheck import run_exec
from supervisor.system.cgroups import Cgroup


async def watch(
    config: SidecarConfig,
    env: Mapping[str, str],
    log: FilteringBoundLogger,
    on_pass: Callable[[], None] | None = None,
    *,
    cgroup: Cgroup | None = None,
) -> tuple[str, int]:
    """Check until `failures` consecutive checks failed; return (last reason, failures).

    Runs until cancelled while the sidecar stays healthy. Logs `health_check_failed` (reason,
    failures) per failure, `health_check_recovered` when a check passes after failures.
    """
    health = config.health
    failures = 0
    due = anyio.current_time() + health.interval_s
    while True:
        await anyio.sleep_until(due)
        reason = await check(config, env, cgroup=cgroup)
        # The next check is due one interval after this one was; if the loop fell behind that
        # far, one interval from now (never two checks back to back).
        due = max(due + health.interval_s, anyio.current_time())
        if reason is None:
            if on_pass is not None:
                on_pass()
            if failures:
                log.info("health_check_recovered", failures=failures)
                failures = 0
            continue
        failures += 1
        log.warning("health_check_failed", reason=reason, failures=failures)
        if failures >= health.failures:
            return reason, failures


async def check(
    config: SidecarConfig, env: Mapping[str, str], *, cgroup: Cgroup | None = None
) -> str | None:
    """One check: None when healthy, else why not."""
    health = config.health
    timeout_s = health.timeout_s
    match health.probe:
        case HealthKind.TCP:
            return await probes.tcp_failure(config.host, _port(config), timeout_s)
        case HealthKind.HTTP:
            return await probes.http_failure(config.host, _port(config), health.path, timeout_s)
        case HealthKind.EXEC:
            return await run_exec(
                health.command, cwd=config.cwd, env=env, timeout_s=timeout_s, cgroup=cgroup
            )
        case HealthKind.NONE | HealthKind.NOTIFY:  # notify: the watchdog (hold.py) judges
            return None
        case _:
            assert_never(health.probe)


def _port(config: SidecarConfig) -> int:
    if config.port is None:  # config validation makes tcp and http checks need a port
        raise ValueError(f"sidecar {config.name}: a {config.health.probe} check needs a port")
    return config.port
