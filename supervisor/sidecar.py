"""The supervision loop of one sidecar: preflight, an attempt, then restart with backoff or rest.

Every state change goes through `lifecycle.next_state`; every wait is event-driven (process
exit through a pidfd, probe handshakes) and bounded. One launch of the child is an `Attempt`.
"""

from __future__ import annotations

import time

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import children, exitwatch, logs, net, status
from supervisor.attempt import Attempt, read_recorded_pid
from supervisor.config import SidecarConfig
from supervisor.lifecycle import Event, State, decide_after_exit, next_state
from supervisor.outputlog import OutputLog
from supervisor.reconcile.preflight import Action, Context, Outcome, preflight
from supervisor.runtime import Runtime

WAIT_POLL_S = 1.0


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
        self.attempt: Attempt | None = None
        self._output_log: OutputLog | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished = anyio.Event()
        self._finished.set()

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
        # output.log spans the restarts of one run; its file is opened with the first line.
        self._output_log = OutputLog.open(self.rt.state, self.config, self.log)
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                await self._supervise(interactive and self.rt.interactive_allowed)
        finally:
            if self._output_log is not None:
                await self._output_log.aclose()  # shielded and bounded
                self._output_log = None
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
        if self.attempt is not None:
            self.attempt.kill_now()

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
            self.attempt = Attempt(
                self.config, self.rt, host=self, log=self.log, output_log=self._output_log
            )
            try:
                exit_info = await self.attempt.run(attempt=self.attempts, interactive=interactive)
            finally:
                self.attempt = None
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
            recorded_pid=lambda: read_recorded_pid(self.rt.state, self.name),
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

    # -- what the attempt reports (AttemptHost) ------------------------------------------------

    def spawned(self, child: children.Child) -> None:
        self.rt.on_change(self)

    def ready(self, child: children.Child) -> None:
        self._transition(Event.READY, reason=None)

    def held(self) -> None:
        if self.attempts:
            self.attempts = 0
            self.rt.on_change(self)

    def stopping(self) -> None:
        if self.state in (State.STARTING, State.READY):
            self._transition(Event.STOP, reason=None)

    def ended(self, reason: str | None, last_exit: dict[str, object]) -> None:
        self.reason = reason
        self.last_exit = last_exit

    def _settle_stopped(self) -> None:
        """After the supervision task ends: a cancelled sidecar rests in `stopped`."""
        if self.state in (State.FAILED, State.EXITED, State.STOPPED):
            return
        if self.state is not State.STOPPING:
            self.log.info("sidecar_stopping", pid=None, signal=self.config.stop.signal.name)
            self._transition(Event.STOP, reason=None)
            self.log.info("sidecar_stopped", pid=None, escalated=False)
        self._transition(Event.STOPPED, reason=None)

    # -- state -------------------------------------------------------------------------------

    def _transition(self, event: Event, *, reason: str | None = None) -> None:
        new = next_state(self.state, event)
        self.state = new
        self.since = time.time()
        self.reason = reason
        self.rt.on_change(self)

    def record(self) -> dict[str, object]:
        attempt = self.attempt
        child = attempt.child if attempt is not None else None
        ready_child = attempt.ready_child if attempt is not None else None
        return {
            "name": self.name,
            "state": self.state.value,
            "pid": child.pid if child is not None and child.status is None else None,
            # Known once ready (see Child.create_time); never read here before.
            "create_time": ready_child.create_time if ready_child else None,
            "port": self.config.port,
            "attempts": self.attempts,
            "restarts": self.restarts,
            "since": status.iso_utc(self.since),
            "last_exit": self.last_exit,
            "reason": self.reason,
        }
