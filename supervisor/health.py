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

import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import assert_never

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import children, output, probes, show
from supervisor.cgroups import Cgroup
from supervisor.config import HealthKind, SidecarConfig

KILL_WAIT_S = 2.0  # after SIGKILL to a check's group: how long its members may take to vanish
OUTPUT_DRAIN_S = 0.2  # a check's last words, after it exited
REASON_CAP = 200  # characters of a check's output quoted in a failure reason


async def watch(
    config: SidecarConfig,
    env: Mapping[str, str],
    log: FilteringBoundLogger,
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
        case HealthKind.NONE:
            return None
        case _:
            assert_never(health.probe)


def _port(config: SidecarConfig) -> int:
    if config.port is None:  # config validation makes tcp and http checks need a port
        raise ValueError(f"sidecar {config.name}: a {config.health.probe} check needs a port")
    return config.port


async def run_exec(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout_s: float,
    cgroup: Cgroup | None = None,
) -> str | None:
    """Run `argv` (no shell) in a session of its own: None on exit 0 within `timeout_s`.

    Whatever happens (timeout, cancellation), no process of its group survives this call; with
    `cgroup`, nothing of that cgroup (it is emptied before the check, and killed after).
    """
    try:
        if cgroup is not None:
            cgroup.ensure()
            if cgroup.kill():
                await cgroup.wait_empty(KILL_WAIT_S)
        child = children.spawn(argv, cwd=cwd, env=env, cgroup=cgroup)
    except OSError as exc:
        return f"cannot use the check's cgroup: {exc.strerror or exc}"
    except children.SpawnError as exc:
        return str(exc)
    said: list[str] = []

    def keep_last(_stream: str, line: str, _truncated: bool) -> None:
        if line.strip():
            said[:] = [line.strip()]

    pipes = [
        (stream.fileno(), name)
        for stream, name in ((child.popen.stdout, "stdout"), (child.popen.stderr, "stderr"))
        if stream is not None
    ]
    try:
        async with anyio.create_task_group() as tg:
            drained = output.forward_all(pipes, keep_last, tg)
            with anyio.move_on_after(timeout_s) as scope:
                await child.wait_exit()
            if scope.cancelled_caught:
                with anyio.CancelScope(shield=True):
                    await child.stop(signal.SIGKILL, KILL_WAIT_S)
                result: str | None = (
                    f"no result within {timeout_s:g}s; killed it and its process group"
                )
            else:
                status = child.finish()  # SIGKILL to what is left of its group, then reap
                if status.code == 0:
                    result = None
                elif status.signal is not None:
                    result = f"killed by {show.signal_name(status.signal)}"
                else:
                    result = f"exited with code {status.code}"
            with anyio.move_on_after(OUTPUT_DRAIN_S):
                await drained.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if child.status is None:  # cancelled mid-check: the sidecar is being stopped
                await child.stop(signal.SIGKILL, KILL_WAIT_S)
            if cgroup is not None and cgroup.kill():  # the check's strays, whatever they did
                await cgroup.wait_empty(KILL_WAIT_S)
            child.close()
    if result is not None and said:
        result += f": {show.printable(said[0], REASON_CAP)}"
    return result
