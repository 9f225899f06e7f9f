"""The supervision loop of one sidecar: preflight, an attempt, then restart with backoff or rest.

Every state change goes through `lifecycle.next_state`; every wait is event-driven (process
exit through a pidfd, probe handshakes) and bounded. One launch of the child is an `Attempt`.
"""

from __future__ import annotations

import time
from collections import deque

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import SidecarConfig
from supervisor.config.expand import for_launch
from supervisor.core import status
from supervisor.core.depends import Blocker
from supervisor.core.lifecycle import Event, State, decide_after_exit, finish_event, next_state
from supervisor.reconcile.decide import LaunchKind, launch_kind
from supervisor.reconcile.preflight import Action, Context, Outcome, preflight
from supervisor.sidecar import inherit, ports
from supervisor.sidecar.attempt import Attempt
from supervisor.sidecar.outputlog import OutputLog
from supervisor.sidecar.records import read_recorded_pid
from supervisor.sidecar.runtime import Runtime
from supervisor.system import children, exitwatch, logs, net, proctime, reaper

WAIT_POLL_S = 1.0
# The outcomes of a launch (SPEC 7: READY=1 once every sidecar's first launch has one).
SETTLED = frozenset({State.READY, State.WAITING, State.FAILED, State.EXITED, State.COMPLETED})
AT_REST = (State.FAILED, State.EXITED, State.COMPLETED)  # no task supervises it any more


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
        self.last_exit: status.LastExit | None = None
        self.attempt: Attempt | None = None
        self.abandoned = False  # a child of it outlived SIGKILL (left unreaped)
        # For the control API's events: who holds the port, when the next attempt is due, and
        # the child's latest output lines.
        self.holder: tuple[int | None, str | None] = (None, None)
        self.next_attempt: tuple[float, float] | None = None  # (delay_s, due at epoch s)
        self.recent_output: deque[str] = deque(maxlen=status.OUTPUT_LINES)
        self._output_log: OutputLog | None = None
        self._scope: anyio.CancelScope | None = None
        self._finished = anyio.Event()
        self._finished.set()
        self._settled = anyio.Event()
        self._settled.set()
        # The port it serves on: the configured one, or one chosen (port = "auto") or moved to
        # (reclaim.foreign = "relocate") while the daemon runs; kept across its restarts.
        self.port: int | None = config.port
        self.launch = self._launch_config()
        self.is_healthy = False  # depends_on "healthy": a check or watchdog ping passed since ready
        self.notify_status: str | None = None  # the child's latest STATUS= (sd_notify)
        self.waiting_for: Blocker | None = None  # the dependency it waits for

    def keep_port(self, port: int) -> None:
        """Serve on `port` (an auto port chosen by the sidecar this one replaces)."""
        self.port = port
        self.launch = self._launch_config()

    def _launch_config(self) -> SidecarConfig:
        return for_launch(self.config, port=self.port, state_dir=str(self.rt.state.path))

    @property
    def running(self) -> bool:
        """A child of it is alive (depends_on "started")."""
        attempt = self.attempt
        return attempt is not None and attempt.child is not None and attempt.child.status is None

    @property
    def name(self) -> str:
        return self.config.name

    # -- control (called by the daemon) ------------------------------------------------------

    async def run(
        self,
        *,
        launch: LaunchKind,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Supervise until stopped (cancelled) or until a terminal state (failed, exited,
        completed). `launch` says why this first launch happens; every later one is a
        RESTART."""
        self._finished = anyio.Event()
        self._settled = anyio.Event()
        # output.log spans the restarts of one run; its file is opened with the first line.
        self._output_log = OutputLog.open(self.rt.state, self.config, self.log)
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                await self._supervise(self._kind(launch))
        finally:
            self._settled.set()
            if self._output_log is not None:
                await self._output_log.aclose()  # shielded and bounded
                self._output_log = None
            self._settle_stopped()
            self._scope = None
            self._finished.set()

    @property
    def finished(self) -> bool:
        """Its supervision task is over (or was never started)."""
        return self._finished.is_set()

    async def wait_finished(self) -> None:
        await self._finished.wait()

    async def wait_settled(self) -> None:
        """Until this launch reached an outcome: ready, waiting, failed or exited (or the
        sidecar was stopped). What systemd's READY=1 and `reload --wait` wait for."""
        await self._settled.wait()

    async def stop(self) -> None:
        """Stop gracefully (idempotent); returns once the child and its group are gone."""
        if self._scope is not None:
            self._scope.cancel()
        await self._finished.wait()
        if self.state in AT_REST:
            self._transition(Event.STOP)
            self._transition(Event.STOPPED)

    @property
    def active(self) -> bool:
        """Its supervision task runs (it may be starting, ready, in backoff or waiting)."""
        return not self._finished.is_set()

    def reset_attempts(self) -> None:
        self.attempts = 0

    def kill_now(self) -> None:
        """Second SIGTERM (or the shutdown bound): SIGKILL the child's whole group at once (its
        stop then completes). The supervision ends too: a sidecar whose stop had not begun yet
        (it waits for its dependents to stop first) must not restart what was just killed."""
        if self.attempt is not None:
            self.attempt.kill_now()
        if self._scope is not None:
            self._scope.cancel()

    # -- the supervision loop ------------------------------------------------------------------

    async def _await_dependencies(self) -> bool:
        """Until every `depends_on` condition holds: `waiting`, with the dependency named.
        True if it waited (the launch then comes out of `waiting`: SPEC 5.3 non-interactive)."""
        while (blocker := self.rt.blocker(self.config)) is not None:
            if blocker != self.waiting_for:
                before, self.waiting_for = self.waiting_for, blocker
                # Logged once per dependency it waits for; its reason follows the dependency's
                # state (status, events) without a log line each time.
                if before is None or (before.dependency, before.condition) != (
                    blocker.dependency,
                    blocker.condition,
                ):
                    self.log.info(
                        "sidecar_waiting_dependency",
                        dependency=blocker.dependency,
                        condition=blocker.condition.value,
                        dependency_state=blocker.state.value if blocker.state else None,
                    )
                self._transition(Event.DEPEND, reason=blocker.reason)
            if blocker.settled:
                self._settled.set()  # its dependency has an outcome: so has this launch
            await self.rt.changes.wait()
        if self.waiting_for is None:
            return False
        self.waiting_for = None
        self.log.info("sidecar_dependencies_met")
        return True

    async def _choose_port(self) -> None:
        """`port = "auto"` at its first launch: a free port, kept while the daemon runs."""
        if not self.config.auto_port or self.port is not None:
            return
        self.port, _ = await ports.take_free_port(self.config, self.rt.sockets)
        self.launch = self._launch_config()
        self.log.info("sidecar_port_chosen", port=self.port, url=self.launch.url)

    async def _relocate(self, outcome: Outcome) -> bool:
        """`reclaim.foreign = "relocate"`: a stranger holds the port, move to a free one."""
        if self.port is None:
            return False
        from_port = self.port
        moved = await ports.relocate(self.config, self.rt.sockets, from_port, outcome, self.log)
        if moved is None:
            return False
        self.port = moved
        self.launch = self._launch_config()
        self.log.warning(
            "sidecar_relocated",
            port=moved,
            from_port=from_port,
            url=self.launch.url,
            holder_pid=outcome.holder_pid,
        )
        return True

    def _kind(self, launch: LaunchKind) -> LaunchKind:
        return launch_kind(launch, unattended=not self.rt.interactive_allowed)

    async def _supervise(self, launch: LaunchKind) -> None:
        """`launch`: why the first launch happens. Every later one, and one out of `waiting`
        (a port, a dependency), is a RESTART: nobody asked for it now, so it never asks."""
        while True:
            self.is_healthy = False
            if await self._await_dependencies():
                launch = self._kind(LaunchKind.RESTART)
            self._transition(Event.LAUNCH, reason=None)
            try:
                await self._choose_port()
            except inherit.BindError as exc:
                self.log.error("sidecar_start_failed", reason=str(exc))
                self._transition(Event.GIVE_UP, reason=str(exc))
                return
            outcome = await self._preflight(launch)
            if await self._relocate(outcome):
                outcome = await self._preflight(launch)
            if outcome.action is Action.WAIT:
                verdict = outcome.verdict.value if outcome.verdict else None
                self.holder = (outcome.holder_pid, verdict)
                self._transition(Event.WAIT, reason=outcome.reason)
                self.log.info(
                    "sidecar_waiting",
                    port=self.config.port,
                    holder_pid=outcome.holder_pid,
                    verdict=verdict,
                    reason=outcome.reason,
                )
                await self._wait_for_port(outcome)
                launch = self._kind(LaunchKind.RESTART)
                continue
            if outcome.action is Action.FAIL:
                self.log.error("sidecar_start_failed", reason=outcome.reason)
                self._transition(Event.GIVE_UP, reason=outcome.reason)
                return
            listen: inherit.ListenSocket | None = None
            if self.config.socket.inherit and self.port is not None:
                try:
                    listen = await self.rt.sockets.acquire(self.name, self.config.host, self.port)
                except inherit.BindError as exc:
                    if not await self._bind_failed(exc):
                        return
                    launch = self._kind(LaunchKind.RESTART)
                    continue
            self.attempt = Attempt(
                self.launch,
                self.rt,
                host=self,
                log=self.log,
                listen=listen,
                output_log=self._output_log,
            )
            try:
                exit_info = await self.attempt.run(attempt=self.attempts, launch=launch)
            finally:
                self.abandoned = self.abandoned or self.attempt.abandoned
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
                    self.next_attempt = (decision.delay_s, time.time() + decision.delay_s)
                    self._transition(Event.RETRY, reason=self.reason)
                    await anyio.sleep(decision.delay_s)
                    launch = self._kind(LaunchKind.RESTART)
                case Event.GIVE_UP if exit_info.daemonized or exit_info.unstartable:
                    self._transition(Event.GIVE_UP, reason=self.reason)
                    return
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
                    event = finish_event(exit_info)
                    if event is Event.COMPLETE:
                        self.log.info("sidecar_completed", code=exit_info.code)
                    self._transition(event, reason=self.reason)
                    return

    async def _bind_failed(self, exc: inherit.BindError) -> bool:
        """The inherited socket could not be bound. True: retry (waited a poll for the port to be
        free); False: the sidecar failed (the address itself is unusable)."""
        if not exc.in_use:
            self.log.error("sidecar_start_failed", reason=str(exc))
            self._transition(Event.GIVE_UP, reason=str(exc))
            return False
        # The preflight found no listener, yet the port is taken: a race, reclaim disabled, or a
        # socket bound without listen(). Poll like any wait, without a process scan.
        self.log.warning("socket_bind_failed", address=exc.address, error=exc.reason)
        self._transition(Event.WAIT, reason=str(exc))
        self.log.info(
            "sidecar_waiting", port=self.config.port, holder_pid=None, verdict=None, reason=str(exc)
        )
        await anyio.sleep(WAIT_POLL_S)
        return True

    async def _preflight(self, launch: LaunchKind) -> Outcome:
        ctx = Context(
            our_pid=self.rt.our_pid,
            our_create_time=self.rt.our_create_time,
            recorded_pid=lambda: read_recorded_pid(self.rt.state, self.name),
            stdin_is_tty=self.rt.stdin_is_tty,
            consent_lock=self.rt.consent_lock,
            should_run=lambda: self._scope is not None and not self._scope.cancel_called,
            current_sessions=self.rt.current_sessions,
            ledger=self.rt.ledger,
            own_inodes=self.rt.sockets.inodes,
            adopted=lambda: frozenset(reaper.adopted()),
            asking=self._asking,
        )
        return await preflight(self.launch, launch=launch, ctx=ctx, log=self.log)

    def _asking(self, why: str | None) -> None:
        self.reason = why
        self.rt.on_change(self)

    async def _wait_for_port(self, outcome: Outcome) -> None:
        if self.port is not None:
            await wait_for_port(self.port, outcome, self.log)

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

    def ended(self, reason: str | None, last_exit: status.LastExit) -> None:
        self.reason = reason
        self.last_exit = last_exit

    def output(self, line: str) -> None:
        self.recent_output.append(line[: status.OUTPUT_LINE_CAP])

    def healthy(self) -> None:
        if not self.is_healthy:
            self.is_healthy = True
            self.rt.on_change(self)

    def notified(self, status: str | None) -> None:
        if status != self.notify_status:
            self.notify_status = status
            self.rt.on_change(self)

    def _settle_stopped(self) -> None:
        """After the supervision task ends: a cancelled sidecar rests in `stopped`."""
        if self.state in (*AT_REST, State.STOPPED):
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
        if new in SETTLED:
            self._settled.set()
        self.rt.on_change(self)

    def record(self) -> status.SidecarRecord:
        attempt = self.attempt
        child = attempt.child if attempt is not None else None
        ready_child = attempt.ready_child if attempt is not None else None
        waiting = self.waiting_for if self.state is State.WAITING else None
        return status.SidecarRecord(
            name=self.name,
            state=self.state,
            pid=child.pid if child is not None and child.status is None else None,
            # Known once ready (see Child.create_time); never read here before.
            create_time=ready_child.create_time if ready_child else None,
            port=self.port,
            url=self.launch.url,
            attempts=self.attempts,
            restarts=self.restarts,
            since=self.since,
            last_exit=self.last_exit,
            reason=self.reason,
            depends_on={name: c.value for name, c in self.config.depends_on.items()},
            waiting_for=(
                status.WaitingFor(waiting.dependency, waiting.condition.value)
                if waiting is not None
                else None
            ),
            notify_status=self.notify_status,
        )

    def details(self) -> status.Details:
        """What the control API's event for the current state carries beyond `record()`."""
        waiting = self.waiting_for if self.state is State.WAITING else None
        return status.Details(
            holder_pid=self.holder[0],
            verdict=self.holder[1],
            attempt=self.attempts,
            max_attempts=self.config.restart.max_attempts,
            delay_s=self.next_attempt[0] if self.next_attempt else None,
            next_attempt_at=self.next_attempt[1] if self.next_attempt else None,
            output=tuple(self.recent_output),
            dependency=waiting.dependency if waiting is not None else None,
            condition=waiting.condition.value if waiting is not None else None,
        )


async def wait_for_port(port: int, outcome: Outcome, log: FilteringBoundLogger) -> None:
    """Poll the port cheaply (no process scan) until it is free or its holder changes.

    When the holder's pid is known, its exit ends the wait at once (a pidfd): the sidecar starts
    as soon as the port is released rather than at the next poll, and a co-holder left on the
    socket is judged afresh. A lookup that fails is not "free": the wait goes on.
    """
    owner = outcome.owner
    holder_exit = _exit_handle(outcome.holder_pid)
    owner_exit = _exit_handle(owner.pid) if owner is not None else None
    polls = 0
    try:
        # Checked once the handles are open: an owner that dies after this is seen by its
        # handle; one that died before (while we decided to wait) re-runs the preflight now.
        if owner is not None and not proctime.is_alive(owner.pid, owner.create_time):
            log.info("sidecar_wait_owner_exited", port=port, owner_pid=owner.pid)
            return
        while True:
            with anyio.move_on_after(WAIT_POLL_S):
                if holder_exit is not None or owner_exit is not None:
                    await _first_exit(holder_exit, owner_exit)
                    if owner_exit is not None and owner_exit.ready():
                        # The live holder's supervisor is gone: the holder is an orphan now.
                        log.info("sidecar_wait_owner_exited", port=port, owner_pid=owner_exit.pid)
                    # Else the holder we waited for is gone: the port is free, or still held by
                    # a co-holder of its socket (fork, SCM_RIGHTS) - the same socket, so the
                    # listeners look unchanged. Either way the preflight looks again, now.
                    return
                await anyio.sleep(WAIT_POLL_S)
            polls += 1
            try:
                listeners = await net.find_listeners_async(port)
            except net.LookupFailed as exc:
                log.warning("sidecar_wait_lookup_failed", port=port, error=str(exc))
                continue
            log.debug("sidecar_wait_polled", port=port, polls=polls, held=bool(listeners))
            if not listeners or frozenset(listeners) != outcome.listeners:
                return
    finally:
        for handle in (holder_exit, owner_exit):
            if handle is not None:
                handle.close()


async def _first_exit(*handles: exitwatch.ExitHandle | None) -> None:
    """Until one of the processes exits."""
    async with anyio.create_task_group() as race:

        async def wait(handle: exitwatch.ExitHandle) -> None:
            await handle.wait()
            race.cancel_scope.cancel()

        for handle in handles:
            if handle is not None:
                race.start_soon(wait, handle)
