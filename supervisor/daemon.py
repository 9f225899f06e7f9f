"""The daemon: the task group, signals, start-up, reload and shutdown of every sidecar."""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from supervisor import (
    config,
    exitwatch,
    inherit,
    logs,
    notify,
    paths,
    procs,
    proctime,
    reaper,
    signals,
    status,
)
from supervisor.config import Config, LogFormat, LogLevel, SidecarConfig
from supervisor.control.events import EventHub
from supervisor.errors import ForeignProcError, StateDirError, SupervisorError
from supervisor.ledger import Ledger
from supervisor.lifecycle import State
from supervisor.notify import Notifier
from supervisor.runtime import Runtime
from supervisor.sidecar import Sidecar
from supervisor.statedir import PID_NAME, StateDir
from supervisor.statuswriter import StatusWriter
from supervisor.tags import OwnerTag, format_owner_tag

if TYPE_CHECKING:
    from supervisor.control.server import ControlServer
    from supervisor.logfile import LogFile

# Cold start (SPEC 10): what only later work needs -- the control socket, the registry, the
# sweep of an earlier daemon's leftovers, a reload, the log file -- is imported where it is
# first used, after the first launches have started, not on the way to the first spawn.

KILL_GRACE_S = 1.0  # past the shutdown bound: SIGKILLed groups get this long to be reaped
# While sidecars start (or a reload starts them), systemd is told every EXTEND_EVERY_S that the
# job needs EXTEND_BY_S more; each sidecar's own ready.timeout and budget bound the wait.
EXTEND_EVERY_S = 10.0
EXTEND_BY_S = 30.0
# The control socket and the sweep wait for the first launches to get past their preflight (a
# spawn, a wait or a failure), at most this long: their imports and scans would otherwise run on
# the event loop while a preflight's worker thread returns, delaying the first spawns.
FIRST_LAUNCH_BOUND_S = 1.0


@dataclass(frozen=True)
class RunOptions:
    """`supervisor run`'s command line; None means "as the config says"."""

    config: str | None
    state_dir: str | None
    log_format: str | None
    log_level: str | None
    exit_with_parent: bool
    interactive: bool
    log_file: str | None = None  # --log-file; "" = stderr whatever the config says


def main(args: RunOptions) -> int:
    """`supervisor run`: validate, lock the state dir, then run the event loop until shutdown."""
    # Until our handlers are installed, a TERM/INT/HUP/USR must not kill us or be lost: they stay
    # pending and are delivered once the event loop listens (see Daemon.run).
    signals.block()
    ours, proc_self = proctime.proc_is_ours()
    if not ours:
        raise ForeignProcError(os.getpid(), proc_self)
    config_path = paths.config_path(args.config)
    cfg = config.load(config_path)
    state_path = paths.state_dir(args.state_dir, cfg.supervisor.state_dir)
    log_format = LogFormat(args.log_format) if args.log_format else cfg.supervisor.log_format
    log_level = LogLevel(args.log_level) if args.log_level else cfg.supervisor.log_level
    # A symlinked state dir is the user's choice: messages show where it really is.
    with StateDir.open(state_path, create=True) as state:
        state.path = Path(os.path.realpath(state_path))
        logs.configure(log_format, log_level)  # stderr, until the lock is ours: ...
        with state.lock():
            log_file = _open_log_file(cfg, args)  # ... a log file is opened (and rotated) only then
            try:
                logs.configure(log_format, log_level, log_file=log_file)
                _run(cfg, config_path, state, args, log_file)
            finally:
                if log_file is not None:
                    log_file.close()  # the last lines, bounded
    return 0


def _open_log_file(cfg: Config, args: RunOptions) -> LogFile | None:
    path = cfg.supervisor.log_file if args.log_file is None else paths.log_file(args.log_file)
    if path is None:
        return None
    from supervisor.logfile import LogFile

    daemon = cfg.supervisor
    return LogFile.open(path, max_bytes=daemon.log_max_bytes, backups=daemon.log_backups)


def _run(
    cfg: Config, config_path: Path, state: StateDir, args: RunOptions, log_file: LogFile | None
) -> None:
    me = os.getpid()
    # The orphans our sidecars leave become ours: a daemonizing command is seen for what it is.
    subreaper = reaper.become_subreaper()
    daemon = Daemon(
        cfg,
        config_path=config_path,
        state=state,
        pid=me,
        create_time=procs.create_time(me) or time.time(),
        exit_with_parent=args.exit_with_parent or cfg.supervisor.exit_with_parent,
        interactive=args.interactive,
        log_overrides=(args.log_format, args.log_level),
        previous_record=state.read(PID_NAME),
        log_file=log_file,
    )
    daemon.subreaper = subreaper
    try:
        # Not fsynced: it names this living process (a crash of the machine ends it), and it is
        # written before the first spawn.
        state.write(PID_NAME, daemon.pid_record(), durable=False)
    except OSError as exc:
        raise StateDirError(state.path, f"cannot write {PID_NAME}: {exc.strerror}") from None
    try:
        anyio.run(daemon.run)
    finally:
        # A process that outlived the shutdown keeps supervisor.pid: it tells the next daemon
        # that this one did not end cleanly, so that it sweeps what is left.
        if not daemon.left_behind:
            state.remove(PID_NAME)


def _exclusive(method: Callable[[Daemon], Awaitable[None]]) -> Callable[[Daemon], Awaitable[None]]:
    """Reload, restart-all and the control socket's actions take turns (Daemon.ops_lock)."""

    @functools.wraps(method)
    async def exclusive(self: Daemon) -> None:
        async with self.ops_lock:
            await method(self)

    return exclusive


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        config_path: Path,
        state: StateDir,
        pid: int,
        create_time: float,
        exit_with_parent: bool,
        interactive: bool,
        log_overrides: tuple[str | None, str | None],
        previous_record: Mapping[str, object] | None = None,
        log_file: LogFile | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.state = state
        self.pid = pid
        self.create_time = create_time
        self.started_at = time.time()
        self.exit_with_parent = exit_with_parent
        self.parent_pid = os.getppid()
        self.log_overrides = log_overrides
        self.log_file = log_file
        self.previous_record = previous_record  # the supervisor.pid we replace, if any
        self.log = logs.get()
        self.notifier = Notifier.from_env()
        self.sidecars: dict[str, Sidecar] = {}
        self.shutting_down = False
        self.left_behind = False  # a sidecar's process outlived the shutdown (D state)
        self.subreaper = False  # adopted orphans are ours to reap (Linux)
        self._stop_reason: str | None = None
        self._pending: list[signal.Signals] = []  # HUP / USR1 not handled yet, in order
        self._wake = anyio.Event()
        self._op_scope: anyio.CancelScope | None = None
        self._reloads_received = 0  # SIGHUPs so far
        self._last_reload: dict[str, object] = {"done": 0, "result": None, "error": None}
        self._tg: anyio.abc.TaskGroup | None = None
        self._last_summary = ""
        self.status = StatusWriter(state, self.status_document, self.log)
        self.ops_lock = anyio.Lock()  # one change of the sidecar set at a time (_exclusive)
        self.events = EventHub()
        self._launching = {s.name for s in cfg.sidecars}  # first launches not past preflight
        self._launched = anyio.Event()
        if not self._launching:
            self._launched.set()
        stdin_tty = False
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stdin_tty = os.isatty(0)
        self.runtime = Runtime(
            state=state,
            ledger=Ledger(state),
            our_pid=pid,
            our_create_time=create_time,
            owner_tag=format_owner_tag(pid, create_time),
            base_env={
                k: v
                for k, v in os.environ.items()
                if k not in notify.ENV_VARS and k not in inherit.ENV_VARS
            },
            interactive_allowed=interactive,
            stdin_is_tty=stdin_tty,
            on_change=self._sidecar_changed,
            current_sessions=self._current_sessions,
        )

    def pid_record(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "started_at": status.iso_utc(self.started_at),
            "config": str(self.config_path),
        }

    # -- status --------------------------------------------------------------------------------

    def _current_sessions(self) -> dict[int, str]:
        # Our children lead their own sessions: the session id is the child's pid.
        sessions = {}
        for sidecar in self.sidecars.values():
            attempt = sidecar.attempt
            if attempt is not None and attempt.child is not None:
                sessions[attempt.child.pid] = sidecar.name
        return sessions

    def status_document(self) -> dict[str, object]:
        daemon = {**self.pid_record(), "state_dir": str(self.state.path)}
        daemon["reload"] = {"received": self._reloads_received, **self._last_reload}
        return status.document(daemon, [s.record() for s in self.sidecars.values()])

    def _sidecar_changed(self, sidecar: Sidecar) -> None:
        if sidecar.name in self._launching and (
            sidecar.state is not State.STARTING
            or (sidecar.attempt is not None and sidecar.attempt.child is not None)
        ):
            self._launching.discard(sidecar.name)
            if not self._launching:
                self._launched.set()
        self.status.changed()
        self.events.sidecar_changed(sidecar)
        if self.notifier.enabled:
            line = status.summary_line([s.record() for s in self.sidecars.values()])
            if line != self._last_summary:
                self._last_summary = line
                self.notifier.status(line)

    # -- sidecars ------------------------------------------------------------------------------

    def _group(self) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError("the daemon's task group is not running")
        return self._tg

    async def _start(self, cfg: SidecarConfig, *, interactive: bool) -> Sidecar:
        sidecar = self.sidecars.get(cfg.name)
        if sidecar is None or sidecar.config != cfg:
            sidecar = Sidecar(cfg, self.runtime)
            self.sidecars[cfg.name] = sidecar
        await self._group().start(_run_sidecar, sidecar, interactive)
        return sidecar

    # -- the control socket (control/) ---------------------------------------------------------

    def _control_server(self) -> ControlServer:
        from supervisor import registry
        from supervisor.control.actions import SidecarActions
        from supervisor.control.server import ControlServer

        actions = SidecarActions(
            sidecars=lambda: self.sidecars,
            document=self.status_document,
            launch=lambda sidecar: self._group().start(_run_sidecar, sidecar, True),
            lock=self.ops_lock,
            stopping=lambda: self.shutting_down,
        )
        return ControlServer(
            self.state,
            actions,
            self.events,
            self.log,
            on_listening=self._register,
            on_closed=lambda: registry.unregister(self.state.path, self.pid),
        )

    def _register(self) -> None:
        """In the per-user registry, so that commands find us without --state-dir."""
        from supervisor import registry

        try:
            registry.register(
                self.state.path,
                self.pid,
                self.create_time,
                str(self.config_path),
                status.iso_utc(self.started_at),
            )
        except SupervisorError as exc:  # findable only by its state dir then; nothing worse
            self.log.warning("registry_unavailable", error=exc.message)

    async def _stop_all(self, sidecars: list[Sidecar]) -> None:
        async with anyio.create_task_group() as tg:
            for sidecar in sidecars:
                tg.start_soon(sidecar.stop)

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        with anyio.open_signal_receiver(*signals.HANDLED) as received:
            signals.unblock()  # before anything is spawned: children inherit the mask
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._receive_signals, received)
                tg.start_soon(self.status.run)
                if self.subreaper:
                    tg.start_soon(_reap_adopted)
                self.log.info(
                    "daemon_started",
                    pid=self.pid,
                    config=str(self.config_path),
                    state_dir=str(self.state.path),
                    sidecars=[s.name for s in self.cfg.sidecars],
                    interactive=self.runtime.interactive_allowed,
                )
                if self.exit_with_parent:
                    tg.start_soon(self._watch_parent)
                interval = self.notifier.watchdog_interval_s()
                if interval:
                    tg.start_soon(_watchdog, self.notifier, interval)
                await self._operation(self._start_all)
                await self._operation(self._until_launched)
                tg.start_soon(self._sweep)
                await tg.start(self._control_server().serve)
                # What is loaded by now (modules, classes, the config) lives as long as we do:
                # out of the cyclic collector's sight, a full collection no longer walks it
                # (~5 ms each, several per 100 spawns in a crash storm).
                gc.freeze()
                if self._stop_reason is None:
                    await self.status.write_now()
                    tg.start_soon(self._announce_ready, list(self.sidecars.values()))
                await self._serve()
                await self._shutdown(self._stop_reason or "unknown")
                self.runtime.sockets.close_all()
                tg.cancel_scope.cancel()
        self.log.info("daemon_stopped", pid=self.pid)

    async def _start_all(self) -> None:
        for cfg in self.cfg.sidecars:
            await self._start(cfg, interactive=True)

    async def _until_launched(self) -> None:
        """Until every first launch got past its preflight (FIRST_LAUNCH_BOUND_S at most).

        What earlier daemons left holding no port is swept only then, alongside the first
        launches: it is in nobody's way, and a leftover that ignores SIGTERM must not hold them
        up.
        """
        with anyio.move_on_after(FIRST_LAUNCH_BOUND_S):
            await self._launched.wait()

    async def _sweep(self) -> None:
        from supervisor.reconcile import sweep

        await sweep.sweep(
            self.runtime.ledger,
            sweep.previous_owner(self.previous_record),
            {s.name: s for s in self.cfg.sidecars},
            OwnerTag(self.pid, self.create_time),
            self.log,
        )

    async def _announce_ready(self, sidecars: list[Sidecar]) -> None:
        """READY=1 once every sidecar's first launch reached an outcome (SPEC 7), so that
        `systemctl start` returns when the sidecars serve; meanwhile EXTEND_TIMEOUT_USEC keeps
        a slow sidecar from hitting TimeoutStartSec."""
        await self._until_settled(sidecars)
        self.notifier.ready()

    async def _until_settled(self, sidecars: list[Sidecar]) -> None:
        if not self.notifier.enabled:
            await _all_settled(sidecars)
            return
        while True:
            self.notifier.extend_timeout(int(EXTEND_BY_S * 1_000_000))
            with anyio.move_on_after(EXTEND_EVERY_S):
                await _all_settled(sidecars)
                return

    # -- signals -------------------------------------------------------------------------------

    async def _receive_signals(self, received: AsyncIterator[signal.Signals]) -> None:
        """Take every signal as it comes: a stop request is acted on at once, ahead of whatever
        work is queued or running; HUP and USR1 are queued (and coalesced, as signals are)."""
        async for signum in received:
            match signum:
                case signal.SIGTERM | signal.SIGINT:
                    if self._stop_reason is None:
                        self._request_stop(signum.name)
                    else:  # the second one: no more grace
                        self.log.warning("shutdown_forced", signal=signum.name)
                        self._kill_all()
                case signal.SIGHUP | signal.SIGUSR1:
                    if signum == signal.SIGHUP:
                        # Counted at once and published, for `reload --wait` (see _reload).
                        self._reloads_received += 1
                        self.status.changed()
                    if self._stop_reason is None and signum not in self._pending:
                        self._pending.append(signum)
                        self._wake.set()
                case signal.SIGUSR2:
                    await self._dump_status()
                case _:
                    pass

    def _request_stop(self, reason: str) -> None:
        self._stop_reason = reason
        self._pending.clear()
        if self._op_scope is not None:
            self._op_scope.cancel()  # a reload or restart in progress gives way to the stop
        self._wake.set()

    async def _operation(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run one piece of queued work (start-up, a reload, a restart); a stop cancels it."""
        if self._stop_reason is not None:
            return
        with anyio.CancelScope() as scope:
            self._op_scope = scope
            try:
                await work()
            finally:
                self._op_scope = None

    async def _serve(self) -> None:
        """Handle queued signals until a stop is requested."""
        while self._stop_reason is None:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._pending and self._stop_reason is None:
                signum = self._pending.pop(0)
                if signum == signal.SIGHUP:
                    await self._operation(self._reload)
                else:
                    await self._operation(self._restart_all)

    async def _watch_parent(self) -> None:
        """Shut down when the launching process exits: pidfd (Linux), kqueue (macOS), else
        polling. Never by testing ppid == 1: under a subreaper an orphan is reparented elsewhere.
        """
        await _wait_pid_exit(self.parent_pid)
        if self._stop_reason is None:
            self.log.info("parent_exited", parent_pid=self.parent_pid)
            self._request_stop("parent_exited")

    # -- shutdown ------------------------------------------------------------------------------

    async def _shutdown(self, reason: str) -> None:
        """Stop every sidecar in parallel, within `shutdown_timeout` (a hard bound): past it,
        SIGKILL what is left, and exit even if a child never dies (KILL_GRACE_S later)."""
        self.shutting_down = True
        sidecars = list(self.sidecars.values())
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                # Each stop signals its group before anything is logged.
                for sidecar in sidecars:
                    tg.start_soon(sidecar.stop)
                self.notifier.stopping()
                self.log.info("daemon_stopping", reason=reason)
                self.events.daemon_event("daemon_stopping", reason=reason)
                with anyio.move_on_after(self.cfg.supervisor.shutdown_timeout_s) as bound:
                    await _all_finished(sidecars)
                if bound.cancelled_caught:
                    self.log.warning(
                        "shutdown_timeout_exceeded",
                        timeout_s=self.cfg.supervisor.shutdown_timeout_s,
                    )
                    self._kill_all()
                    with anyio.move_on_after(KILL_GRACE_S):
                        await _all_finished(sidecars)
                tg.cancel_scope.cancel()  # stops still waiting: their sidecars are given up
            self.left_behind = any(not s.finished or s.abandoned for s in sidecars)
            with anyio.move_on_after(KILL_GRACE_S):
                await self.status.write_now()

    def _kill_all(self) -> None:
        for sidecar in self.sidecars.values():
            sidecar.kill_now()

    async def _dump_status(self) -> None:
        doc = await self.status.write_now()
        self.log.info("status_dumped", status=doc)

    @_exclusive
    async def _reload(self) -> None:
        """SIGHUP. Done (and READY=1 again) once the sidecars it started reached an outcome;
        the result goes into status.json for `supervisor reload --wait`."""
        self.notifier.reloading()
        covers = self._reloads_received  # every SIGHUP received so far is answered by this one
        result: dict[str, object] = {"done": covers, "result": "interrupted", "error": None}
        try:
            try:
                new = config.load(self.config_path)
            except SupervisorError as exc:
                self.log.error("config_invalid", path=str(self.config_path), error=exc.message)
                result.update(result="rejected", error=exc.message)
                return
            self._apply_daemon_settings(new)
            from supervisor.reload import plan_reload

            plan = plan_reload(self.cfg.sidecars, new.sidecars)
            await self._stop_all([self.sidecars[n] for n in plan.to_stop])
            for name in plan.to_stop:
                del self.sidecars[name]
            # Inherited sockets stay bound unless their sidecar is gone or moves elsewhere.
            self.runtime.sockets.retain(
                {s.name: (s.host, s.port) for s in new.sidecars if s.socket.inherit and s.port}
            )
            self.cfg = new
            started = [
                await self._start(cfg, interactive=True)
                for cfg in new.sidecars
                if cfg.name in plan.to_start
            ]
            self.sidecars = {s.name: self.sidecars[s.name] for s in new.sidecars}
            await self.status.write_now()
            await self._until_settled(started)
            self.log.info(
                "config_reloaded",
                added=list(plan.added),
                removed=list(plan.removed),
                changed=list(plan.changed),
                unchanged=list(plan.unchanged),
            )
            result["result"] = "applied"
        finally:
            self._last_reload = result
            self.status.changed()
            self.notifier.ready()

    def _apply_daemon_settings(self, new: Config) -> None:
        fmt_override, level_override = self.log_overrides
        if new.supervisor.log_format != self.cfg.supervisor.log_format or (
            new.supervisor.log_level != self.cfg.supervisor.log_level
        ):
            logs.configure(
                LogFormat(fmt_override) if fmt_override else new.supervisor.log_format,
                LogLevel(level_override) if level_override else new.supervisor.log_level,
                log_file=self.log_file,
            )
        for key in ("state_dir", "log_file", "log_max_bytes", "log_backups"):
            if getattr(new.supervisor, key) != getattr(self.cfg.supervisor, key):
                self.log.warning(
                    "config_setting_ignored",
                    key=f"supervisor.{key}",
                    detail=f"{key} cannot change while the daemon runs; restart it",
                )

    @_exclusive
    async def _restart_all(self) -> None:
        sidecars = list(self.sidecars.values())
        await self._stop_all(sidecars)
        for sidecar in sidecars:
            sidecar.reset_attempts()
            await self._group().start(_run_sidecar, sidecar, True)


async def _run_sidecar(
    sidecar: Sidecar,
    interactive: bool,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await sidecar.run(interactive=interactive, task_status=task_status)


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    while True:
        notifier.watchdog()
        await anyio.sleep(interval_s)


async def _wait_pid_exit(pid: int) -> None:
    try:
        handle = exitwatch.open_exit_handle(pid)
    except ProcessLookupError:
        return
    if handle is not None:
        try:
            await handle.wait()
        finally:
            handle.close()
        return
    # No exit notification on this OS: a change of parent means the launcher is gone.
    while os.getppid() == pid:  # noqa: ASYNC110 - nothing to wait on but time
        await anyio.sleep(1.0)


async def _all_finished(sidecars: list[Sidecar]) -> None:
    for sidecar in sidecars:
        await sidecar.wait_finished()


async def _all_settled(sidecars: list[Sidecar]) -> None:
    for sidecar in sidecars:
        await sidecar.wait_settled()


async def _reap_adopted() -> None:
    """As a subreaper: reap adopted orphans as they exit (SIGCHLD), never our own forks."""
    with anyio.open_signal_receiver(signal.SIGCHLD) as exits:
        await anyio.to_thread.run_sync(reaper.reap_adopted)
        async for _ in exits:
            await anyio.to_thread.run_sync(reaper.reap_adopted)
