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
import signal
import time
from typing import Protocol

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import (
    children,
    inherit,
    ledger,
    logs,
    net,
    output,
    probes,
    procs,
    proctime,
    reaper,
    show,
    status,
    tags,
)
from supervisor.config import HealthKind, SidecarConfig
from supervisor.lifecycle import ExitInfo
from supervisor.outputlog import OutputLog
from supervisor.reconcile.kill import KillAborted, kill_process
from supervisor.runtime import Runtime
from supervisor.statedir import SIDECAR_PID_NAME, StateDir, int_field

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

    def ended(self, reason: str | None, last_exit: dict[str, object]) -> None: ...

    def output(self, line: str) -> None:
        """One line of the child's output (the latest are kept for the control API)."""


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

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    async def run(self, *, attempt: int, interactive: bool) -> ExitInfo:
        """Spawn the child and supervise it until it ends; a cancelled attempt stops it."""
        rt = self.rt
        env = tags.child_env(rt.base_env, self.config.env, sidecar=self.name, owner=rt.owner_tag)
        listen = self.listen
        if listen is not None:
            env.update(inherit.listen_env(self.name))
        try:
            child = children.spawn(
                self.config.command,
                cwd=self.config.cwd,
                env=env,
                listen_fd=listen.fd if listen is not None else None,
            )
        except children.SpawnError as exc:
            self.reason = str(exc)
            self.log.error("sidecar_start_failed", reason=self.reason)
            self.host.ended(self.reason, _last_exit(None, None))
            return ExitInfo(code=None, signal=None, failed_start=True)
        self.child = child
        spawned = time.monotonic()
        self.log.info("sidecar_spawned", pid=child.pid, attempt=attempt, interactive=interactive)
        self.host.spawned(child)
        failed_start = True
        daemonized = False
        recorded = anyio.Event()
        try:
            async with anyio.create_task_group() as pipes:
                pipes.start_soon(self._record_spawn, child, recorded)
                drained = output.forward_all(
                    _pipes(child), self._output, pipes, drain=self.output_log
                )
                failure = await self._await_ready(child)
                if failure is None:
                    failed_start = False
                    await self._became_ready(child, spawned)
                    await self._hold_ready(child)
                else:
                    self.reason = failure
                    self.log.warning("sidecar_start_failed", pid=child.pid, reason=failure)
                    if not child.exited:
                        with anyio.CancelScope(shield=True):
                            await child.stop(self.config.stop.signal, self.config.stop.timeout_s)
                    elif failure == EXITED_EARLY:
                        with anyio.CancelScope(shield=True):
                            daemonized = await self._daemonized(child)
                self._child_ended(child, failed_start)
                with anyio.move_on_after(OUTPUT_DRAIN_S):
                    # Output still in the pipes is forwarded; a setsid'd grandchild holding a pipe
                    # open must not keep us here.
                    await drained.wait()
                pipes.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if child.status is None and not child.abandoned:
                    await self._stop_child(child)
                await recorded.wait()
                chores = self.chores
                if chores is not None:
                    # Off the respawn path: the session scan may take a few ms.
                    chores.start_soon(self._forget_spawn, child)
                else:
                    await self._forget_spawn(child)
                self._release(child)
        exit_status = child.status
        return ExitInfo(
            code=exit_status.code if exit_status else None,
            signal=exit_status.signal if exit_status else None,
            failed_start=failed_start,
            daemonized=daemonized,
            unhealthy=self.unhealthy is not None,
        )

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
            with anyio.move_on_after(timeout) as probe_scope:
                await probes.wait_ready(
                    self.config,
                    child.pid,
                    stranger,
                    listen_inode=self.listen.inode if self.listen is not None else None,
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
            await anyio.to_thread.run_sync(self._write_pidfile, record)
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
            if self.config.health.probe is not HealthKind.NONE:
                hold.start_soon(self._watch_health, child, hold.cancel_scope)
        if self.unhealthy is not None and child.status is None:
            with anyio.CancelScope(shield=True):
                # A stopped (SIGSTOP) child handles no stop signal until it is continued.
                child.signal_group(signal.SIGCONT)
                await child.stop(self.config.stop.signal, self.config.stop.timeout_s)

    async def _watch_health(self, child: children.Child, hold: anyio.CancelScope) -> None:
        env = tags.child_env(
            self.rt.base_env, self.config.env, sidecar=self.name, owner=self.rt.owner_tag
        )
        env[HEALTH_PID_ENV] = str(child.pid)
        if self.config.port is not None:
            env[HEALTH_PORT_ENV] = str(self.config.port)
        from supervisor import health  # only sidecars that have health checks need it

        reason, failures = await health.watch(self.config, env, self.log)
        if child.exited:
            return  # it crashed meanwhile: an exit, not a hang
        self.unhealthy = f"unhealthy: {failures} health checks failed in a row; last: {reason}"
        self.log.warning("sidecar_unhealthy", pid=child.pid, failures=failures, reason=reason)
        hold.cancel()

    def _child_ended(self, child: children.Child, failed_start: bool) -> None:
        """The leader exited: kill what is left of its group, reap, record the exit."""
        exit_status = child.finish()
        signal_name = show.signal_name(exit_status.signal)
        if self.unhealthy is not None:
            self.reason = self.unhealthy
        elif not failed_start:
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

    def _release(self, child: children.Child) -> None:
        self._abandoned = self._abandoned or child.abandoned
        child.close()
        if self.child is child:
            self.child = None
        if self.ready_child is child:
            self.ready_child = None

    # -- a command that daemonized ------------------------------------------------------------

    async def _daemonized(self, child: children.Child) -> bool:
        """The child exited before ready: did it leave a process of its own on the port? (Its
        session, or an orphan of it adopted by us as subreaper.) If so, say so and stop it."""
        port = self.config.port
        if port is None:
            return False
        left = await anyio.to_thread.run_sync(_left_on_port, child.pid, child.create_time, port)
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
                spawn, error = await anyio.to_thread.run_sync(self._record, child)
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
            sid=child.pid,  # it leads the session it was started in
            pgid=child.pgid,
            command=tuple(self.config.command),
            sidecar=self.name,
            daemon_pid=self.rt.our_pid,
            daemon_create_time=self.rt.our_create_time,
            spawned_at=status.iso_utc(time.time()),
        )

    async def _forget_spawn(self, child: children.Child) -> None:
        """Out of the ledger once nothing of its session is left (else a later sweep or
        preflight still knows the leftovers as ours)."""
        spawn = self._spawn
        if spawn is None or child.abandoned:
            return
        await anyio.to_thread.run_sync(self._forget_if_gone, spawn)

    def _forget_if_gone(self, spawn: ledger.Spawn) -> None:
        # The session scan and the removal in one trip to a worker thread (a spawn's CPU).
        if not procs.session_members(spawn.sid):
            self.rt.ledger.forget(spawn)

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
        if self.output_log is not None:
            self.output_log.write(stream, line, truncated)
        self.host.output(line)
        if truncated:
            self.output_events.info("child_output", stream=stream, line=line, truncated=True)
        else:
            self.output_events.info("child_output", stream=stream, line=line)


EXITED_EARLY = "exited before becoming ready"


def _left_on_port(child_pid: int, child_created: float, port: int) -> list[tuple[int, float]]:
    """Processes born of the child (its session's, or orphans of it we adopted) on `port`."""
    candidates = set(procs.session_members(child_pid)) | set(reaper.adopted())
    born: dict[int, float] = {}
    for pid in candidates:
        created = procs.create_time(pid)
        if created is not None and (
            created >= child_created or proctime.same_create_time(created, child_created)
        ):
            born[pid] = created
    listening = net.pids_listening(port, born)
    return sorted((pid, born[pid]) for pid in listening)


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


def _last_exit(code: int | None, signal_name: str | None) -> dict[str, object]:
    return {"code": code, "signal": signal_name, "at": status.iso_utc(time.time())}


def read_recorded_pid(state: StateDir, name: str) -> int | None:
    """The pid in `<name>/sidecar.pid` (annotation for the preflight's log line only)."""
    try:
        with state.subdir(name, create=False) as folder:
            return int_field(folder.read(SIDECAR_PID_NAME), "pid")
    except OSError:
        return None
