"""The async lifecycle of one sidecar: preflight, spawn, readiness, restart with backoff, stop.

Every state change goes through `lifecycle.next_state`; every wait is event-driven (process
exit through a pidfd, probe handshakes) and bounded.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import children, exitwatch, logs, net, pidfile, probes, show, status, tags
from supervisor.config import SidecarConfig
from supervisor.lifecycle import Event, ExitInfo, State, decide_after_exit, next_state
from supervisor.reconcile.preflight import Action, Context, Outcome, preflight

WAIT_POLL_S = 1.0
OUTPUT_DRAIN_S = 0.5


@dataclass
class Runtime:
    """What every sidecar shares with the daemon."""

    state_dir: Path
    our_pid: int
    our_create_time: float
    owner_tag: str
    base_env: Mapping[str, str]
    interactive_allowed: bool
    stdin_is_tty: bool
    on_change: Callable[[Sidecar], None]
    consent_lock: anyio.Lock = field(default_factory=anyio.Lock)


def _exit_handle(pid: int | None) -> exitwatch.ExitHandle | None:
    if pid is None:
        return None
    try:
        return exitwatch.open_exit_handle(pid)
    except ProcessLookupError:
        return None


class Sidecar:
    def __init__(self, config: SidecarConfig, runtime: Runtime) -> None:
        self.config = config
        self.rt = runtime
        self.log: FilteringBoundLogger = logs.get(sidecar=config.name)
        self.state = State.STOPPED
        self.attempts = 0
        self.restarts = 0
        self.since = time.time()
        self.reason: str | None = None
        self.last_exit: dict[str, object] | None = None
        self.child: children.Child | None = None
        self.ready_child: children.Child | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished = anyio.Event()
        self._finished.set()
        self.pidfile_path = runtime.state_dir / config.name / "sidecar.pid"

    @property
    def name(self) -> str:
        return self.config.name

    # -- control (called by the daemon) ------------------------------------------------------

    async def run(
        self,
        *,
        interactive: bool,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Supervise until stopped (cancelled) or until a terminal state (failed, exited)."""
        self._finished = anyio.Event()
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                await self._supervise(interactive and self.rt.interactive_allowed)
        finally:
            self._settle_stopped()
            self._scope = None
            self._finished.set()

    async def stop(self) -> None:
        """Stop gracefully (idempotent); returns once the child and its group are gone."""
        if self._scope is not None:
            self._scope.cancel()
        await self._finished.wait()
        if self.state in (State.FAILED, State.EXITED):
            self._transition(Event.STOP)
            self._transition(Event.STOPPED)

    def reset_attempts(self) -> None:
        self.attempts = 0

    def kill_now(self) -> None:
        """Second SIGTERM: SIGKILL the child's whole group at once (its stop then completes)."""
        child = self.child
        if child is not None and child.status is None:
            child.signal_group(signal.SIGKILL)

    # -- the supervision loop ------------------------------------------------------------------

    async def _supervise(self, interactive: bool) -> None:
        while True:
            self._transition(Event.LAUNCH, reason=None)
            outcome = await self._preflight(interactive)
            if outcome.action is Action.WAIT:
                self._transition(Event.WAIT, reason=outcome.reason)
                self.log.info(
                    "sidecar_waiting",
                    port=self.config.port,
                    holder_pid=outcome.holder_pid,
                    verdict=outcome.verdict.value if outcome.verdict else None,
                    reason=outcome.reason,
                )
                await self._wait_for_port(outcome)
                interactive = False
                continue
            if outcome.action is Action.FAIL:
                self.log.error("sidecar_start_failed", reason=outcome.reason)
                self._transition(Event.GIVE_UP, reason=outcome.reason)
                return
            exit_info = await self._run_child(interactive)
            decision = decide_after_exit(self.config.restart, self.attempts, exit_info)
            match decision.event:
                case Event.RETRY:
                    self.attempts = decision.attempts
                    self.restarts += 1
                    self.log.info(
                        "restart_scheduled",
                        attempt=decision.attempts,
                        max_attempts=self.config.restart.max_attempts,
                        delay_s=decision.delay_s,
                    )
                    self._transition(Event.RETRY, reason=self.reason)
                    await anyio.sleep(decision.delay_s)
                    interactive = False
                case Event.GIVE_UP:
                    reason = (
                        f"gave up after {self.attempts} restarts "
                        f"(restart.max_attempts = {self.config.restart.max_attempts})"
                    )
                    self.log.error(
                        "restart_budget_exhausted",
                        attempts=self.attempts,
                        max_attempts=self.config.restart.max_attempts,
                    )
                    self._transition(Event.GIVE_UP, reason=reason)
                    return
                case _:
                    self._transition(Event.FINISH, reason=self.reason)
                    return

    async def _preflight(self, interactive: bool) -> Outcome:
        ctx = Context(
            our_pid=self.rt.our_pid,
            our_create_time=self.rt.our_create_time,
            pidfile_path=self.pidfile_path,
            stdin_is_tty=self.rt.stdin_is_tty,
            consent_lock=self.rt.consent_lock,
            should_run=lambda: self._scope is not None and not self._scope.cancel_called,
        )
        return await preflight(self.config, interactive=interactive, ctx=ctx, log=self.log)

    async def _wait_for_port(self, outcome: Outcome) -> None:
        """Poll the port cheaply (no process scan) until it is free or its holder changes.

        When the holder's pid is known, its exit also wakes us at once (a pidfd), so the sidecar
        starts as soon as the port is released rather than at the next poll.
        """
        port = self.config.port
        if port is None:
            return
        holder_exit = _exit_handle(outcome.holder_pid)
        polls = 0
        try:
            while True:
                with anyio.move_on_after(WAIT_POLL_S):
                    if holder_exit is not None:
                        await holder_exit.wait()
                        holder_exit.close()  # it fired; later polls just sleep
                        holder_exit = None
                        if not net.find_listeners(port):
                            return  # the port went with its holder: no need to wait
                    await anyio.sleep(WAIT_POLL_S)
                polls += 1
                listeners = net.find_listeners(port)
                self.log.debug("sidecar_wait_polled", port=port, polls=polls, held=bool(listeners))
                if not listeners or frozenset(listeners) != outcome.listeners:
                    return
        finally:
            if holder_exit is not None:
                holder_exit.close()

    # -- one child -----------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        return tags.child_env(
            self.rt.base_env, self.config.env, sidecar=self.name, owner=self.rt.owner_tag
        )

    async def _run_child(self, interactive: bool) -> ExitInfo:
        try:
            child = children.spawn(self.config.command, cwd=self.config.cwd, env=self._child_env())
        except children.SpawnError as exc:
            self.reason = str(exc)
            self.log.error("sidecar_start_failed", reason=self.reason)
            self.last_exit = {"code": None, "signal": None, "at": status.iso_utc(time.time())}
            return ExitInfo(code=None, signal=None, failed_start=True)
        self.child = child
        spawned = time.monotonic()
        self.log.info(
            "sidecar_spawned", pid=child.pid, attempt=self.attempts, interactive=interactive
        )
        self.rt.on_change(self)
        failed_start = True
        try:
            async with anyio.create_task_group() as output:
                drained = self._forward_output(child, output)
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
                self._child_ended(child, failed_start)
                with anyio.move_on_after(OUTPUT_DRAIN_S):
                    # Output still in the pipes is forwarded; a setsid'd grandchild holding a pipe
                    # open must not keep us here.
                    await drained.wait()
                output.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if child.status is None:
                    await self._stop_child(child)
                self._release(child)
        status_ = child.status
        return ExitInfo(
            code=status_.code if status_ else None,
            signal=status_.signal if status_ else None,
            failed_start=failed_start,
        )

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
                failure.append("exited before becoming ready")
                race.cancel_scope.cancel()

            race.start_soon(watch_exit)
            timeout = self.config.ready.timeout_s
            with anyio.move_on_after(timeout) as probe_scope:
                await probes.wait_ready(self.config, child.pid, stranger)
            if probe_scope.cancelled_caught:
                failure.append(f"not ready within {timeout:g}s (ready.timeout)")
            race.cancel_scope.cancel()
        if not failure and child.exited:
            failure.append("exited before becoming ready")
        return failure[0] if failure else None

    async def _became_ready(self, child: children.Child, spawned: float) -> None:
        self.ready_child = child
        try:
            # The fsync (~1 ms) happens off the event loop; readiness is announced after it.
            record = self._pid_record(child)
            await anyio.to_thread.run_sync(self._write_pidfile, record)
            self.log.info("pidfile_written", path=str(self.pidfile_path), pid=child.pid)
        except OSError as exc:
            self.log.error("pidfile_write_failed", path=str(self.pidfile_path), error=str(exc))
        elapsed_ms = round((time.monotonic() - spawned) * 1000, 1)
        self._transition(Event.READY, reason=None)
        self.log.info("sidecar_ready", pid=child.pid, elapsed_ms=elapsed_ms)

    def _write_pidfile(self, record: dict[str, object]) -> None:
        pidfile.ensure_dir(self.pidfile_path.parent)
        pidfile.write(self.pidfile_path, record)

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

    async def _hold_ready(self, child: children.Child) -> None:
        with anyio.move_on_after(self.config.restart.reset_after_s):
            await child.wait_exit()
            return
        if self.attempts:
            self.attempts = 0
            self.rt.on_change(self)
        await child.wait_exit()

    def _child_ended(self, child: children.Child, failed_start: bool) -> None:
        """The leader exited: kill what is left of its group, reap, record the exit."""
        exit_status = child.finish()
        self.last_exit = {
            "code": exit_status.code,
            "signal": show.signal_name(exit_status.signal),
            "at": status.iso_utc(time.time()),
        }
        if not failed_start:
            self.reason = (
                f"exited with code {exit_status.code}"
                if exit_status.signal is None
                else f"killed by {show.signal_name(exit_status.signal)}"
            )
        self.log.info(
            "sidecar_exited",
            pid=child.pid,
            code=exit_status.code,
            signal=show.signal_name(exit_status.signal),
        )
        self._remove_pidfile()

    async def _stop_child(self, child: children.Child) -> None:
        """Graceful stop of a running child (the sidecar is being stopped). Runs shielded."""
        if self.state in (State.STARTING, State.READY):
            self._transition(Event.STOP, reason=None)
        self.log.info("sidecar_stopping", pid=child.pid, signal=self.config.stop.signal.name)
        escalated = await child.stop(self.config.stop.signal, self.config.stop.timeout_s)
        self._remove_pidfile()
        self.log.info("sidecar_stopped", pid=child.pid, escalated=escalated)

    def _release(self, child: children.Child) -> None:
        child.close()
        if self.child is child:
            self.child = None
        if self.ready_child is child:
            self.ready_child = None

    def _remove_pidfile(self) -> None:
        if pidfile.remove(self.pidfile_path):
            self.log.info("pidfile_removed", path=str(self.pidfile_path))

    def _settle_stopped(self) -> None:
        """After the supervision task ends: a cancelled sidecar rests in `stopped`."""
        if self.state in (State.FAILED, State.EXITED, State.STOPPED):
            return
        if self.state is not State.STOPPING:
            self.log.info("sidecar_stopping", pid=None, signal=self.config.stop.signal.name)
            self._transition(Event.STOP, reason=None)
            self.log.info("sidecar_stopped", pid=None, escalated=False)
        self._transition(Event.STOPPED, reason=None)

    def _forward_output(self, child: children.Child, group: anyio.abc.TaskGroup) -> anyio.Event:
        """Forward stdout/stderr as `child_output` events; the event is set at EOF of both."""
        drained = anyio.Event()
        streams = [
            (stream.fileno(), name)
            for stream, name in ((child.popen.stdout, "stdout"), (child.popen.stderr, "stderr"))
            if stream is not None
        ]
        remaining = len(streams)
        if not remaining:
            drained.set()

        async def forward(fd: int, name: str) -> None:
            nonlocal remaining
            try:
                await children.forward_lines(fd, name, self._output)
            finally:
                remaining -= 1
                if remaining == 0:
                    drained.set()

        for fd, name in streams:
            group.start_soon(forward, fd, name)
        return drained

    def _output(self, stream: str, line: str, truncated: bool) -> None:
        if truncated:
            self.log.info("child_output", stream=stream, line=line, truncated=True)
        else:
            self.log.info("child_output", stream=stream, line=line)

    # -- state -------------------------------------------------------------------------------

    def _transition(self, event: Event, *, reason: str | None = None) -> None:
        new = next_state(self.state, event)
        self.state = new
        self.since = time.time()
        self.reason = reason
        self.rt.on_change(self)

    def record(self) -> dict[str, object]:
        child = self.child
        return {
            "name": self.name,
            "state": self.state.value,
            "pid": child.pid if child is not None and child.status is None else None,
            # Known once ready (see Child.create_time); never read here before.
            "create_time": self.ready_child.create_time if self.ready_child else None,
            "port": self.config.port,
            "attempts": self.attempts,
            "restarts": self.restarts,
            "since": status.iso_utc(self.since),
            "last_exit": self.last_exit,
            "reason": self.reason,
        }
