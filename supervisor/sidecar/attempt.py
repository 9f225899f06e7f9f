"""One attempt of a sidecar: spawn -> ready -> hold while ready -> end (exit, stop or failed start).

While ready, the hold runs the health checks (health.py): `health.failures` failed checks in a
row end the attempt as unhealthy (the child is stopped: stop signal, SIGKILL after
`stop.timeout`), and the sidecar restarts it like a crash.

The sidecar's loop (sidecar.py) runs one `Attempt` per launch and decides what comes next from
the `ExitInfo` it returns; the attempt reports its milestones through `AttemptHost`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from typing import Protocol

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import HealthKind, ProbeKind, SidecarConfig
from supervisor.core import show, status
from supervisor.core.lifecycle import ExitInfo
from supervisor.evidence import ledger, tags
from supervisor.reconcile.decide import LaunchKind, may_ask
from supervisor.reconcile.kill import KillAborted, kill_process, stop_left
from supervisor.sidecar import inherit, output, probes
from supervisor.sidecar.outputlog import OutputLog
from supervisor.sidecar.runtime import Runtime
from supervisor.system import (
    cgroups,
    children,
    execshim,
    logs,
    net,
    notifysock,
    procs,
    proctime,
    reaper,
    workers,
)
from supervisor.system.statedir import SIDECAR_PID_NAME, StateDir, int_field

OUTPUT_DRAIN_S = 0.5
DAEMONIZED_POLL_S = 0.05  # a daemonized server's late bind: as often as a readiness probe
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
        chores: anyio.abc.TaskGroup | None = None,
        listen: inherit.ListenSocket | None = None,
        output_log: OutputLog | None = None,
    ) -> None:
        self.config = config
        self.listen = listen  # the inherited socket (socket.inherit): fd 3 of the child
        self.rt = rt
        self.state = rt.state
        self.host = host
        self.log = log
        self.chores = chores  # the sidecar's: bookkeeping that need not hold up a restart
        self.output_events = logs.get_output(sidecar=config.name)
        self.child: children.Child | None = None
        self.ready_child: children.Child | None = None
        self.reason: str | None = None
        self._abandoned = False
        self._spawn: ledger.Spawn | None = None
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
        daemonized = False
        recorded = anyio.Event()
        try:
            async with anyio.create_task_group() as pipes:
                pipes.start_soon(self._record_spawn, child, recorded)
                if self.notify is not None:
                    pipes.start_soon(
                        self.notify.receive, child.pid, self._notified, self._notify_rejected
                    )
                drained = output.forward_all(
                    _pipes(child), self._output, pipes, drain=self.output_log
                )
                failure = await self._await_ready(child)
                if failure is None:
                    failed_start = False
                    await self._became_ready(child, spawned)
                    await self._hold_ready(child)
                    if child.exited and self.unhealthy is None and _exited_zero(child.pid):
                        # Ready by a listener in its session, then it exited 0 leaving that
                        # listener: a daemonizing parent the probe raced (redis --daemonize yes).
                        with anyio.CancelScope(shield=True):
                            daemonized = await self._daemonized(child, wait=False)
                else:
                    self.reason = failure
                    self.log.warning("sidecar_start_failed", pid=child.pid, reason=failure)
                    if not child.exited:
                        with anyio.CancelScope(shield=True):
                            await child.stop(self.config.stop.signal, self.config.stop.timeout_s)
                    elif failure == EXITED_EARLY and child.cgroup is not None:
                        await self._join_failure(child, drained)
                        deadline = spawned + self.config.ready.timeout_s
                        daemonized = await self._daemonized_in_cgroup(child.cgroup, deadline)
                    elif failure == EXITED_EARLY:
                        with anyio.CancelScope(shield=True):
                            daemonized = await self._daemonized(child)
                self._child_ended(child, keep_reason=failed_start or daemonized)
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
                chores = self.chores
                if chores is not None:
                    # Off the respawn path: the session scan may take a few ms.
                    chores.start_soon(self._forget_spawn, child)
                else:
                    await self._forget_spawn(child)
                self._release(child)
                self._close_notify()
        exit_status = child.status
        return ExitInfo(
            code=exit_status.code if exit_status else None,
            signal=exit_status.signal if exit_status else None,
            failed_start=failed_start,
            daemonized=daemonized,
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

    async def _await_ready(self, child: children.Child) -> str | None:
        """None once ready; else why the start failed (exit before ready, or timeout)."""
        failure: list[str] = []
        warned = False

        def stranger() -> None:
            nonlocal warned
            if not warned:
                warned = True
                self.log.warning(
                    "probe_answered_by_stranger",
                    port=self.config.port,
                    pid=child.pid,
                    detail="the port answers, but the listener is not our child's",
                )

        async with anyio.create_task_group() as race:

            async def watch_exit() -> None:
                await child.wait_exit()
                failure.append(EXITED_EARLY)
                race.cancel_scope.cancel()

            race.start_soon(watch_exit)
            timeout = self.config.ready.timeout_s
            signal_: anyio.Event | None = None
            if self.log_matcher is not None:
                signal_ = self.log_matcher.matched
            elif self.notify is not None and self.config.ready.probe is ProbeKind.NOTIFY:
                signal_ = self.notify.ready
            with anyio.move_on_after(timeout) as probe_scope:
                await probes.wait_ready(
                    self.config,
                    child.pid,
                    stranger,
                    listen_inode=self.listen.inode if self.listen is not None else None,
                    signal=signal_,
                    exec_env=self._check_env(child),
                    members=child.cgroup.members if child.cgroup is not None else None,
                )
            if probe_scope.cancelled_caught:
                failure.append(f"not ready within {timeout:g}s (ready.timeout)")
            race.cancel_scope.cancel()
        if not failure and child.exited:
            failure.append(EXITED_EARLY)
        return failure[0] if failure else None

    async def _became_ready(self, child: children.Child, spawned: float) -> None:
        self.ready_child = child
        try:
            # The fsync (~1 ms) happens off the event loop; readiness is announced after it.
            record = self._pid_record(child)
            await workers.run_sync(self._write_pidfile, record)
            self.log.info("pidfile_written", path=str(self._pidfile_path), pid=child.pid)
        except OSError as exc:
            self.log.error("pidfile_write_failed", path=str(self._pidfile_path), error=str(exc))
        elapsed_ms = round((time.monotonic() - spawned) * 1000, 1)
        self.host.ready(child)
        self.log.info("sidecar_ready", pid=child.pid, elapsed_ms=elapsed_ms, url=self.config.url)

    async def _hold_ready(self, child: children.Child) -> None:
        """Until the child exits, or the health checks find it unhealthy (then it is stopped)."""
        async with anyio.create_task_group() as hold:

            async def until_exit() -> None:
                await child.wait_exit()
                hold.cancel_scope.cancel()

            async def until_held() -> None:
                await anyio.sleep(self.config.restart.reset_after_s)
                self.host.held()

            hold.start_soon(until_exit)
            hold.start_soon(until_held)
            match self.config.health.probe:
                case HealthKind.NONE:
                    self.host.healthy()
                case HealthKind.NOTIFY:
                    hold.start_soon(self._watch_watchdog, child, hold.cancel_scope)
                case _:
                    hold.start_soon(self._watch_health, child, hold.cancel_scope)
        if self.unhealthy is not None and child.status is None:
            with anyio.CancelScope(shield=True):
                # A stopped (SIGSTOP) child handles no stop signal until it is continued.
                child.signal_group(signal.SIGCONT)
                await child.stop(self.config.stop.signal, self.config.stop.timeout_s)

    def _check_env(self, child: children.Child) -> dict[str, str]:
        """The environment of an exec check (readiness or health): the sidecar's, plus these."""
        env = tags.child_env(
            self.rt.base_env, self.config.env, sidecar=self.name, owner=self.rt.owner_tag
        )
        env[HEALTH_PID_ENV] = str(child.pid)
        if self.config.port is not None:
            env[HEALTH_PORT_ENV] = str(self.config.port)
        return env

    async def _watch_health(self, child: children.Child, hold: anyio.CancelScope) -> None:
        env = self._check_env(child)
        from supervisor.sidecar import health  # only sidecars that have health checks need it

        isolation = self.rt.isolation
        cgroup = isolation.check(self.name) if isolation is not None else None
        reason, failures = await health.watch(
            self.config, env, self.log, self.host.healthy, cgroup=cgroup
        )
        if child.exited:
            return  # it crashed meanwhile: an exit, not a hang
        self.unhealthy = f"unhealthy: {failures} health checks failed in a row; last: {reason}"
        self.log.warning("sidecar_unhealthy", pid=child.pid, failures=failures, reason=reason)
        hold.cancel()

    async def _watch_watchdog(self, child: children.Child, hold: anyio.CancelScope) -> None:
        """`health.probe = "notify"`: a child silent for `watchdog` seconds is unhealthy."""
        notify, watchdog_s = self.notify, self.config.health.watchdog_s
        if notify is None or watchdog_s is None:
            raise ValueError("a notify health check needs its socket and watchdog")
        while True:
            with anyio.move_on_after(watchdog_s) as silence:
                await notify.pinged()
            if silence.cancelled_caught:
                break
            self.host.healthy()
        if child.exited:
            return
        self.unhealthy = f"unhealthy: no WATCHDOG=1 within {watchdog_s:g}s (health.watchdog)"
        self.log.warning("sidecar_unhealthy", pid=child.pid, failures=1, reason=self.unhealthy)
        hold.cancel()

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
        self._remove_pidfile()

    async def _stop_child(self, child: children.Child) -> None:
        """Graceful stop of a running child (the sidecar is being stopped). Runs shielded."""
        # Signal first, log after: whatever happens to the log, the group gets its signal.
        sig = self.config.stop.signal
        child.terminate(sig)
        self.host.stopping()
        self.log.info("sidecar_stopping", pid=child.pid, signal=sig.name)
        escalated = await child.stop(sig, self.config.stop.timeout_s, signalled=True)
        self._remove_pidfile()
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

    # -- a command that daemonized ------------------------------------------------------------

    async def _daemonized_in_cgroup(self, cgroup: cgroups.Cgroup, deadline: float) -> bool:
        """The child exited before ready and left members in its cgroup: if one of them serves
        the port (whenever it binds, until the ready deadline), it daemonized. Its cgroup is
        then stopped whole (stop signal, SIGKILL after stop.timeout)."""
        port = self.config.port
        if port is None:
            return False
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
            return False
        self.reason = (
            f"it daemonized: it exited and left pid {holder} serving port {port}; run it in the "
            "foreground (nginx: daemon off;  redis: --daemonize no)"
        )
        self.log.error("sidecar_daemonized", holder_pid=holder, port=port, reason=self.reason)
        with anyio.CancelScope(shield=True):
            killed = await cgroup.stop(self.config.stop.signal, self.config.stop.timeout_s)
        if killed:
            self.log.info("cgroup_leftovers_killed", count=killed, path=str(cgroup.path))
        return True

    async def _daemonized(self, child: children.Child, *, wait: bool = True) -> bool:
        """The child exited before ready: did it leave a process of its own on the port? (Its
        session, or an orphan of it adopted by us as subreaper.) If so, say so and stop it.

        A server may bind after its parent exited (redis, a delayed bind): while something
        born of the child lives, we look again, until `ready.timeout`."""
        port = self.config.port
        if port is None:
            return False
        born, left = await workers.run_sync(_left_on_port, child.pid, child.create_time, port)
        with anyio.move_on_after(self.config.ready.timeout_s if wait else 0.0):
            while born and not left:
                await anyio.sleep(DAEMONIZED_POLL_S)
                born, left = await workers.run_sync(
                    _left_on_port, child.pid, child.create_time, port
                )
        if not left:
            return False
        pid = left[0][0]
        self.reason = (
            f"it daemonized: it exited and left pid {pid} serving port {port}; run it in the "
            "foreground (nginx: daemon off;  redis: --daemonize no)"
        )
        self.log.error("sidecar_daemonized", holder_pid=pid, port=port, reason=self.reason)
        for holder, holder_created in left:
            with contextlib.suppress(KillAborted):
                await kill_process(
                    holder,
                    holder_created,
                    stop_signal=self.config.stop.signal,
                    stop_timeout_s=self.config.stop.timeout_s,
                    still_ours=functools.partial(_descends, holder, holder_created, child),
                )
        return True

    # -- the spawn ledger ------------------------------------------------------------------------

    async def _record_spawn(self, child: children.Child, recorded: anyio.Event) -> None:
        """Into the ledger as soon as the pid exists, in one trip to a worker thread (reading
        the create time may wait for the exec; the write is a file and a rename)."""
        try:
            with anyio.CancelScope(shield=True):
                spawn, error = await workers.run_sync(self._record, child)
                self._spawn = spawn
                if error is not None:
                    self.log.error("ledger_write_failed", pid=child.pid, error=str(error))
        finally:
            recorded.set()

    def _record(self, child: children.Child) -> tuple[ledger.Spawn, OSError | None]:
        spawn = self._spawn_entry(child)
        try:
            self.rt.ledger.record(spawn)
        except OSError as exc:
            return spawn, exc
        return spawn, None

    def _spawn_entry(self, child: children.Child) -> ledger.Spawn:
        return ledger.Spawn(
            pid=child.pid,
            create_time=child.create_time,
            boot_id=self.rt.ledger.boot_id,
            sid=child.pid,  # it leads the session it was started in
            pgid=child.pgid,
            command=tuple(self.config.command),
            sidecar=self.name,
            daemon_pid=self.rt.our_pid,
            daemon_create_time=self.rt.our_create_time,
            spawned_at=status.iso_utc(time.time()),
        )

    async def _forget_spawn(self, child: children.Child) -> None:
        """Out of the ledger once the child is reaped: an entry proves only its own process
        (ledger.py), so once that is gone it proves nothing, and a session number left in it
        could only ever match a stranger."""
        spawn = self._spawn
        if spawn is None or child.abandoned:
            return
        await workers.run_sync(self.rt.ledger.forget, spawn)

    # -- the PID file --------------------------------------------------------------------------

    @property
    def _pidfile_path(self) -> str:
        return str(self.state.path / self.name / SIDECAR_PID_NAME)

    def _pid_record(self, child: children.Child) -> dict[str, object]:
        return {
            "pid": child.pid,
            "create_time": child.create_time,
            "port": self.config.port,
            "supervisor_pid": self.rt.our_pid,
            "supervisor_create_time": self.rt.our_create_time,
            "started_at": status.iso_utc(time.time()),
            "command": list(self.config.command),
        }

    def _write_pidfile(self, record: dict[str, object]) -> None:
        # Not fsynced (as the ledger): it names a living process, which a crash of the machine
        # ends; an fsync here delayed `sidecar_ready` by 0.3 ms (median) to 17 ms (loaded disk).
        with self.state.subdir(self.name, create=True) as folder:
            folder.write(SIDECAR_PID_NAME, record, durable=False)

    def _remove_pidfile(self) -> None:
        try:
            with self.state.subdir(self.name, create=False) as folder:
                removed = folder.remove(SIDECAR_PID_NAME)
        except OSError:
            removed = False
        if removed:
            self.log.info("pidfile_removed", path=self._pidfile_path)

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


EXITED_EARLY = "exited before becoming ready"


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


def _exited_zero(pid: int) -> bool:
    """The unreaped child `pid` exited with code 0 (peeked: it stays unreaped for finish())."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return info is not None and info.si_code == os.CLD_EXITED and info.si_status == 0


def _descends(pid: int, created: float, child: children.Child) -> bool:
    """Still that process, and still ours: in the child's session or adopted by us."""
    now = procs.create_time(pid)
    if now is None or not proctime.same_create_time(now, created):
        return False
    return procs.session_id(pid) == child.pid or pid in reaper.adopted()


def _pipes(child: children.Child) -> list[tuple[int, str]]:
    return [
        (stream.fileno(), name)
        for stream, name in ((child.popen.stdout, "stdout"), (child.popen.stderr, "stderr"))
        if stream is not None
    ]


def _last_exit(code: int | None, signal_name: str | None) -> status.LastExit:
    return status.LastExit(code, signal_name, time.time())


def read_recorded_pid(state: StateDir, name: str) -> int | None:
    """The pid in `<name>/sidecar.pid` (annotation for the preflight's log line only)."""
    try:
        with state.subdir(name, create=False) as folder:
            return int_field(folder.read(SIDECAR_PID_NAME), "pid")
    except OSError:
        return None
