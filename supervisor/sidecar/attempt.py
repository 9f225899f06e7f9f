"""One attempt of a sidecar: spawn -> ready -> hold while ready -> end (exit, stop or failed start).

The phases live beside it: the wait for readiness (ready.py), the hold (hold.py, running the
health checks of health.py: `health.failures` failed checks in a row end the attempt as unhealthy,
the child is stopped and the sidecar restarts it like a crash), a command that daemonized
(daemonized.py), and the ledger entry and PID file (records.py).

The sidecar's loop (sidecar.py) runs one `Attempt` per launch and decides what comes next from
the `ExitInfo` it returns; the attempt reports its milestones through `AttemptHost`.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Protocol

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import HealthKind, ProbeKind, SidecarConfig
from supervisor.core import show, status
from supervisor.core.lifecycle import ExitInfo
from supervisor.evidence import tags
from supervisor.reconcile.decide import LaunchKind, may_ask
from supervisor.reconcile.kill import stop_left
from supervisor.sidecar import daemonized, hold, inherit, output, probes
from supervisor.sidecar.outputlog import OutputLog
from supervisor.sidecar.ready import EXITED_EARLY, await_ready
from supervisor.sidecar.records import Records
from supervisor.sidecar.runtime import Runtime
from supervisor.system import cgroups, children, execshim, logs, notifysock, reaper, workers

OUTPUT_DRAIN_S = 0.5
# An exec health check's environment: the sidecar's (with its tags), plus these.
HEALTH_PID_ENV = "SUPERVISOR_SIDECAR_PID"
HEALTH_PORT_ENV = "SUPERVISOR_PORT"


class AttemptHost(Protocol):
    """What an attempt tells its sidecar."""

    def spawned(self, child: children.Child) -> None: ...

    def ready(self, child: children.Child) -> None: ...

    def held(self) -> None:
        """Readiness was held for `restart.reset_after`."""

    def stopping(self) -> None:
        """The sidecar is being stopped while this attempt runs."""

    def ended(self, reason: str | None, last_exit: status.LastExit) -> None: ...

    def output(self, line: str) -> None:
        """One line of the child's output (the latest are kept for the control API)."""

    def healthy(self) -> None:
        """Ready, and a health check (or a watchdog ping) passed: `depends_on` "healthy"."""

    def notified(self, status: str | None) -> None:
        """The child sent an sd_notify message (STATUS= is shown in status)."""


class Attempt:
    def __init__(
        self,
        config: SidecarConfig,
        rt: Runtime,
        *,
        host: AttemptHost,
        log: FilteringBoundLogger,
        listen: inherit.ListenSocket | None = None,
        output_log: OutputLog | None = None,
    ) -> None:
        self.config = config
        self.listen = listen  # the inherited socket (socket.inherit): fd 3 of the child
        self.rt = rt
        self.state = rt.state
        self.host = host
        self.log = log
        self.output_events = logs.get_output(sidecar=config.name)
        self.child: children.Child | None = None
        self.ready_child: children.Child | None = None
        self.reason: str | None = None
        self._abandoned = False
        self.records = Records(config, rt, log)  # its ledger entry and PID file
        self.output_log = output_log
        self.unhealthy: str | None = None  # why, once the health checks gave up on the child
        # Readiness the child signals itself: a line of its output, or sd_notify messages.
        pattern = config.ready.pattern if config.ready.probe is ProbeKind.LOG else None
        self.log_matcher = probes.LogMatcher(pattern) if pattern is not None else None
        self.notify: notifysock.NotifySocket | None = None
        self._join_failed: str | None = None  # the exec shim's line: it could not join its cgroup

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    async def run(self, *, attempt: int, launch: LaunchKind) -> ExitInfo:
        """Spawn the child and supervise it until it ends; a cancelled attempt stops it."""
        rt = self.rt
        env = tags.child_env(rt.base_env, self.config.env, sidecar=self.name, owner=rt.owner_tag)
        listen = self.listen
        if listen is not None:
            env.update(inherit.listen_env(self.name))
        if wants_notify(self.config):
            try:
                self.notify = await workers.run_sync(self._bind_notify)
            except OSError as exc:
                self.reason = f"cannot create its NOTIFY_SOCKET: {exc.strerror or exc}"
                self.log.error("sidecar_start_failed", reason=self.reason)
                self.host.ended(self.reason, _last_exit(None, None))
                return ExitInfo(code=None, signal=None, failed_start=True)
            env["NOTIFY_SOCKET"] = self.notify.address
            if self.config.health.watchdog_s is not None:
                env["WATCHDOG_USEC"] = str(int(self.config.health.watchdog_s * 1_000_000))
        try:
            cgroup = await self._prepare_cgroup()
            child = children.spawn(
                self.config.command,
                cwd=self.config.cwd,
                env=env,
                listen_fd=listen.fd if listen is not None else None,
                cgroup=cgroup,
            )
        except children.SpawnError as exc:
            self._close_notify()
            self.reason = str(exc)
            self.log.error("sidecar_start_failed", reason=self.reason)
            self.host.ended(self.reason, _last_exit(None, None))
            return ExitInfo(code=None, signal=None, failed_start=True, unstartable=exc.fatal)
        self.child = child
        spawned = time.monotonic()
        self.log.info(
            "sidecar_spawned",
            pid=child.pid,
            attempt=attempt,
            interactive=may_ask(launch),
            launch=launch.value,
        )
        self.host.spawned(child)
        failed_start = True
        daemonized_why: str | None = None  # why it counts as daemonized, if it does
        recorded = anyio.Event()
        try:
            async with anyio.create_task_group() as pipes:
                pipes.start_soon(self.records.record_spawn, child, recorded)
                if self.notify is not None:
                    pipes.start_soon(
                        self.notify.receive, child.pid, self._notified, self._notify_rejected
                    )
                drained = output.forward_all(
                    _pipes(child), self._output, pipes, drain=self.output_log
                )
                failure = await await_ready(
                    self.config,
                    child,
                    self.log,
                    signal=self._ready_signal(),
                    listen_inode=listen.inode if listen is not None else None,
                    exec_env=self._check_env(child),
                )
                if failure is None:
                    failed_start = False
                    await self._became_ready(child, spawned)
                    self.unhealthy = await hold.hold_ready(
                        self.config,
                        child,
                        self.log,
                        held=self.host.held,
                        healthy=self.host.healthy,
                        notify=self.notify,
                        isolation=self.rt.isolation,
                        check_env=functools.partial(self._check_env, child),
                    )
                    if (
                        child.exited
                        and self.unhealthy is None
                        and daemonized.exited_zero(child.pid)
                    ):
                        # Ready by a listener in its session, then it exited 0 leaving that
                        # listener: a daemonizing parent the probe raced (redis --daemonize yes).
                        with anyio.CancelScope(shield=True):
                            daemonized_why = await daemonized.check_session(
                                self.config, child, self.log, wait=False
                            )
                else:
                    self.reason = failure
                    self.log.warning("sidecar_start_failed", pid=child.pid, reason=failure)
                    if not child.exited:
                        with anyio.CancelScope(shield=True):
                            await child.stop(self.config.stop.signal, self.config.stop.timeout_s)
                    elif failure == EXITED_EARLY and child.cgroup is not None:
                        await self._join_failure(child, drained)
                        deadline = spawned + self.config.ready.timeout_s
                        daemonized_why = await daemonized.check_cgroup(
                            self.config, child.cgroup, deadline, self.log
                        )
                    elif failure == EXITED_EARLY:
                        with anyio.CancelScope(shield=True):
                            daemonized_why = await daemonized.check_session(
                                self.config, child, self.log
                            )
                if daemonized_why is not None:
                    self.reason = daemonized_why
                self._child_ended(child, keep_reason=failed_start or daemonized_why is not None)
                if child.leftovers_killed and child.cgroup is not None:
                    self.log.info("cgroup_leftovers_killed", count=child.leftovers_killed)
                    with anyio.CancelScope(shield=True):
                        await child.cgroup.wait_empty(children.KILL_WAIT_S)
                with anyio.move_on_after(OUTPUT_DRAIN_S):
                    # Output still in the pipes is forwarded; a setsid'd grandchild holding a pipe
                    # open must not keep us here.
                    await drained.wait()
                pipes.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if child.status is None and not child.abandoned:
                    tree = await workers.run_sync(reaper.snapshot_tree, child.pid)
                    await self._stop_child(child)
                    await self._stop_left(tree)
                await recorded.wait()
                self.records.forget_spawn(child)
                self._release(child)
                self._close_notify()
        exit_status = child.status
        return ExitInfo(
            code=exit_status.code if exit_status else None,
            signal=exit_status.signal if exit_status else None,
            failed_start=failed_start,
            daemonized=daemonized_why is not None,
            unhealthy=self.unhealthy is not None,
        )

    async def _prepare_cgroup(self) -> cgroups.Cgroup | None:
        """The sidecar's cgroup (created once, reused), emptied of an earlier attempt's or a
        dead daemon's leftovers before the next spawn."""
        isolation = self.rt.isolation
        if isolation is None:
            return None
        cgroup = isolation.sidecar(self.name)
        try:
            if cgroup.ensure():
                self.log.info("cgroup_created", path=str(cgroup.path))
            count = cgroup.kill()
        except OSError as exc:
            raise children.SpawnError(
                self.config.command[0], f"cannot use its cgroup {cgroup.path}: {exc.strerror}"
            ) from None
        if count:
            self.log.info("cgroup_leftovers_killed", count=count, path=str(cgroup.path))
            with anyio.CancelScope(shield=True):
                await cgroup.wait_empty(children.KILL_WAIT_S)
        return cgroup

    async def _join_failure(self, child: children.Child, drained: anyio.Event) -> None:
        """The exec shim could not move the child into its cgroup: say so (its stderr line)."""
        if _exit_code(child) != execshim.JOIN_FAILED_CODE:
            return
        with anyio.move_on_after(OUTPUT_DRAIN_S):
            await drained.wait()  # the shim exited at once: its pipes close with it
        if self._join_failed is not None:
            self.reason = f"cannot start it in its cgroup: {self._join_failed}"
            self.log.error("sidecar_start_failed", pid=child.pid, reason=self.reason)

    def kill_now(self) -> None:
        """Second SIGTERM: SIGKILL the child's whole group at once (its stop then completes)."""
        if self.child is not None:
            self.child.kill_now()

    # -- phases --------------------------------------------------------------------------------

    def _ready_signal(self) -> anyio.Event | None:
        """The child's own word that it is ready: a line of its output matched, or READY=1."""
        if self.log_matcher is not None:
            return self.log_matcher.matched
        if self.notify is not None and self.config.ready.probe is ProbeKind.NOTIFY:
            return self.notify.ready
        return None

    async def _became_ready(self, child: children.Child, spawned: float) -> None:
        self.ready_child = child
        self.records.write_pidfile(child)
        elapsed_ms = round((time.monotonic() - spawned) * 1000, 1)
        self.host.ready(child)
        self.log.info("sidecar_ready", pid=child.pid, elapsed_ms=elapsed_ms, url=self.config.url)

    def _check_env(self, child: children.Child) -> dict[str, str]:
        """The environment of an exec check (readiness or health): the sidecar's, plus these."""
        env = tags.child_env(
            self.rt.base_env, self.config.env, sidecar=self.name, owner=self.rt.owner_tag
        )
        env[HEALTH_PID_ENV] = str(child.pid)
        if self.config.port is not None:
            env[HEALTH_PORT_ENV] = str(self.config.port)
        return env

    # -- sd_notify -----------------------------------------------------------------------------

    def _bind_notify(self) -> notifysock.NotifySocket:
        with self.state.subdir(self.name, create=True):
            pass  # the sidecar's folder exists (0700), for its socket
        return notifysock.NotifySocket.bind(self.state.path / self.name)

    def _close_notify(self) -> None:
        if self.notify is not None:
            self.notify.close()

    def _notified(self, fields: dict[str, str]) -> None:
        notify = self.notify
        if notify is None:
            return
        if "STATUS" in fields or "READY" in fields:
            self.log.info(
                "sidecar_notified",
                ready=fields.get("READY") == "1",
                status=notify.status,
            )
        self.host.notified(notify.status)

    def _notify_rejected(self, sender: int | None, why: str) -> None:
        self.log.warning("notify_rejected", sender_pid=sender, reason=why)

    def _child_ended(self, child: children.Child, *, keep_reason: bool) -> None:
        """The leader exited: kill what is left of its group, reap, record the exit."""
        exit_status = child.finish()
        signal_name = show.signal_name(exit_status.signal)
        if self.unhealthy is not None:
            self.reason = self.unhealthy
        elif not keep_reason:  # a failed start or a daemonized exit said why already
            self.reason = (
                f"exited with code {exit_status.code}"
                if exit_status.signal is None
                else f"killed by {signal_name}"
            )
        self.host.ended(self.reason, _last_exit(exit_status.code, signal_name))
        self.log.info("sidecar_exited", pid=child.pid, code=exit_status.code, signal=signal_name)
        self.records.remove_pidfile()

    async def _stop_child(self, child: children.Child) -> None:
        """Graceful stop of a running child (the sidecar is being stopped). Runs shielded."""
        # Signal first, log after: whatever happens to the log, the group gets its signal.
        sig = self.config.stop.signal
        child.terminate(sig)
        self.host.stopping()
        self.log.info("sidecar_stopping", pid=child.pid, signal=sig.name)
        escalated = await child.stop(sig, self.config.stop.timeout_s, signalled=True)
        self.records.remove_pidfile()
        if child.abandoned:
            self.log.error(
                "sidecar_stop_abandoned",
                pid=child.pid,
                detail="still there after SIGKILL (uninterruptible sleep?); left unreaped",
            )
        self.log.info("sidecar_stopped", pid=child.pid, escalated=escalated)

    async def _stop_left(self, tree: list[tuple[int, float]]) -> None:
        """What of the child's tree outlived its group's stop (its own setsid or setpgid):
        proven ours when the stop began (reaper.snapshot_tree), stopped now."""
        if not tree:
            return
        stopped = await stop_left(
            tree, stop_signal=self.config.stop.signal, stop_timeout_s=self.config.stop.timeout_s
        )
        if stopped:
            self.log.info("sidecar_leftovers_stopped", count=len(stopped), pids=stopped)

    def _release(self, child: children.Child) -> None:
        self._abandoned = self._abandoned or child.abandoned
        child.close()
        if self.child is child:
            self.child = None
        if self.ready_child is child:
            self.ready_child = None

    def _output(self, stream: str, line: str, truncated: bool) -> None:
        if self.log_matcher is not None:
            self.log_matcher.feed(line)
        if stream == "stderr" and line.startswith(execshim.JOIN_FAILED):
            self._join_failed = line
        if self.output_log is not None:
            self.output_log.write(stream, line, truncated)
        self.host.output(line)
        if truncated:
            self.output_events.info("child_output", stream=stream, line=line, truncated=True)
        else:
            self.output_events.info("child_output", stream=stream, line=line)


def wants_notify(config: SidecarConfig) -> bool:
    """The child gets a NOTIFY_SOCKET: its readiness or its liveness is told through it."""
    return config.ready.probe is ProbeKind.NOTIFY or config.health.probe is HealthKind.NOTIFY


def _exit_code(child: children.Child) -> int | None:
    """The exit code of a child that ended, read without reaping it (None if unknown)."""
    try:
        waited = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if waited is None or waited.si_code != os.CLD_EXITED:
        return None
    return waited.si_status


def _pipes(child: children.Child) -> list[tuple[int, str]]:
    return [
        (stream.fileno(), name)
        for stream, name in ((child.popen.stdout, "stdout"), (child.popen.stderr, "stderr"))
        if stream is not None
    ]


def _last_exit(code: int | None, signal_name: str | None) -> status.LastExit:
    return status.LastExit(code, signal_name, time.time())
