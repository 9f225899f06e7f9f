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

from supervisor import config
from supervisor.config import (
    Config,
    IsolationMode,
    LogFormat,
    LogLevel,
    SidecarConfig,
    StopConfig,
)
from supervisor.control.events import EventHub
from supervisor.core import depends, status
from supervisor.core import graph as depgraph
from supervisor.core.lifecycle import State
from supervisor.daemon.statuswriter import StatusWriter
from supervisor.errors import ForeignProcError, IsolationError, StateDirError, SupervisorError
from supervisor.evidence.ledger import Ledger
from supervisor.evidence.tags import OwnerTag, format_owner_tag
from supervisor.reconcile.decide import LaunchKind
from supervisor.sidecar import inherit
from supervisor.sidecar.loop import Sidecar
from supervisor.sidecar.runtime import Runtime
from supervisor.system import (
    cgroups,
    exitwatch,
    logs,
    notify,
    paths,
    procs,
    proctime,
    reaper,
    signals,
    workers,
)
from supervisor.system.cgroups import CgroupUnavailable, Isolation
from supervisor.system.notify import Notifier
from supervisor.system.statedir import PID_NAME, StateDir
from supervisor.system.usage import Sampler

if TYPE_CHECKING:
    from supervisor.control.server import ControlServer
    from supervisor.system.logfile import LogFile

# Cold start (SPEC 10): what only later work needs -- the control socket, the registry, the
# sweep of an earlier daemon's leftovers, a reload, the log file -- is imported where it is
# first used, after the first launches have started, not on the way to the first spawn.

KILL_GRACE_S = 1.0  # past the shutdown bound: SIGKILLed groups get this long to be reaped
ADOPTED_STOP_S = 5.0  # adopted orphans at shutdown: SIGTERM, then SIGKILL after this
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
            # Findable from here on (supervisor.pid, the registry): `stop`, `wait` and `status`
            # see a starting daemon before anything slow is done (SPEC 11, issue 25).
            me = os.getpid()
            started = _Started(me, procs.create_time(me) or time.time(), time.time(), config_path)
            previous = state.read(PID_NAME)
            _announce(state, started)
            keep_record = False
            try:
                log_file = _open_log_file(cfg, args)  # ... a log file is opened only then
                try:
                    logs.configure(log_format, log_level, log_file=log_file)
                    isolation = _isolation(cfg.supervisor.isolation, state.path)
                    # From here on whatever ends the loop may leave something of ours behind.
                    keep_record = True
                    keep_record = _run(
                        cfg,
                        state,
                        args=args,
                        log_file=log_file,
                        started=started,
                        previous=previous,
                        isolation=isolation,
                    )
                finally:
                    if log_file is not None:
                        log_file.close()  # the last lines, bounded
            finally:
                from supervisor.control import registry

                registry.unregister(state.path, me)
                # A process that outlived the shutdown keeps supervisor.pid: it tells the next
                # daemon that this one did not end cleanly, so that it sweeps what is left.
                if not keep_record:
                    state.remove(PID_NAME)
    return 0


@dataclass(frozen=True)
class _Started:
    """Who this daemon is, as supervisor.pid and the registry say from its first instant."""

    pid: int
    create_time: float
    started_at: float
    config_path: Path

    def record(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "started_at": status.iso_utc(self.started_at),
            "config": str(self.config_path),
        }


def _announce(state: StateDir, started: _Started) -> None:
    """supervisor.pid, then the registry entry; a temp file a dead daemon left is swept first.
    A registry that is not ours (a link, another user's squatted folder) is not used: the daemon
    is then found by its state dir only, and commands without one say why (registry.py)."""
    from supervisor.control import registry

    state.sweep_temp_files(lambda pid: pid == started.pid or procs.create_time(pid) is not None)
    try:
        # Not fsynced: it names this living process (a crash of the machine ends it).
        state.write(PID_NAME, started.record(), durable=False)
    except OSError as exc:
        raise StateDirError(state.path, f"cannot write {PID_NAME}: {exc.strerror}") from None
    try:
        registry.register(
            state.path,
            started.pid,
            started.create_time,
            str(started.config_path),
            status.iso_utc(started.started_at),
        )
    except SupervisorError as exc:
        logs.get().warning("registry_unavailable", error=exc.message)


def _open_log_file(cfg: Config, args: RunOptions) -> LogFile | None:
    path = cfg.supervisor.log_file if args.log_file is None else paths.log_file(args.log_file)
    if path is None:
        return None
    from supervisor.system.logfile import LogFile

    daemon = cfg.supervisor
    return LogFile.open(path, max_bytes=daemon.log_max_bytes, backups=daemon.log_backups)


def _run(
    cfg: Config,
    state: StateDir,
    *,
    args: RunOptions,
    log_file: LogFile | None,
    started: _Started,
    previous: Mapping[str, object] | None,
    isolation: Isolation | None,
) -> bool:
    """Run the daemon until it stops; True if a process of ours may have outlived it."""
    # The orphans our sidecars leave become ours: a daemonizing command is seen for what it is.
    subreaper = reaper.become_subreaper()
    daemon = Daemon(
        cfg,
        config_path=started.config_path,
        state=state,
        pid=started.pid,
        create_time=started.create_time,
        started_at=started.started_at,
        exit_with_parent=args.exit_with_parent or cfg.supervisor.exit_with_parent,
        interactive=args.interactive,
        log_overrides=(args.log_format, args.log_level),
        previous_record=previous,
        log_file=log_file,
    )
    daemon.subreaper = subreaper
    daemon.runtime.isolation = isolation
    anyio.run(daemon.run)
    if not daemon.left_behind and isolation is not None:
        isolation.remove_empty()
    return daemon.left_behind


def _isolation(mode: IsolationMode, state_path: Path) -> Isolation | None:
    """A cgroup per sidecar (cgroups.py) where the config wants and the host allows it."""
    if mode is IsolationMode.NONE:
        return None
    try:
        return Isolation.setup(state_path)
    except CgroupUnavailable as exc:
        if mode is IsolationMode.CGROUP:
            raise IsolationError(exc.reason) from None
        logs.get().warning("isolation_unavailable", reason=exc.reason)
        return None


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
        started_at: float | None = None,
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
        self.started_at = time.time() if started_at is None else started_at
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
        self._usage = Sampler()
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
            blocker=self._blocker,
        )

    def pid_record(self) -> dict[str, object]:
        return _Started(self.pid, self.create_time, self.started_at, self.config_path).record()

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
        return status.document(daemon, [self._record(s) for s in self.sidecars.values()])

    def _record(self, sidecar: Sidecar) -> dict[str, object]:
        """The sidecar's record, with its isolation, memory and CPU (usage.py)."""
        record = sidecar.record()
        isolation = self.runtime.isolation
        cgroup = isolation.sidecar(sidecar.name) if isolation is not None else None
        usage = self._usage.sample(sidecar.name, record.pid, cgroup)
        return {**record.to_json(), **usage.fields()}

    def _sidecar_changed(self, sidecar: status.Observed) -> None:
        self.runtime.changes.notify()  # dependents waiting on it look again
        launched = self.sidecars.get(sidecar.name)
        if (
            launched is not None
            and sidecar.name in self._launching
            and (
                launched.state is not State.STARTING
                or (launched.attempt is not None and launched.attempt.child is not None)
            )
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

    def _blocker(self, cfg: SidecarConfig) -> depends.Blocker | None:
        """The first of `cfg.depends_on` whose condition does not hold now (depends.py)."""
        if not cfg.depends_on:
            return None
        facts = {
            s.name: depends.Facts(s.state, running=s.running, healthy=s.is_healthy)
            for s in self.sidecars.values()
            if s.name in cfg.depends_on
        }
        reasons = {name: self.sidecars[name].reason for name in facts}
        return depends.blocker(cfg.depends_on, facts, reasons)

    def _graph(self) -> dict[str, list[str]]:
        return {s.name: list(s.config.depends_on) for s in self.sidecars.values()}

    async def _start(
        self, cfg: SidecarConfig, launch: LaunchKind, *, auto_port: int | None = None
    ) -> Sidecar:
        sidecar = self.sidecars.get(cfg.name)
        if sidecar is None or sidecar.config != cfg:
            sidecar = Sidecar(cfg, self.runtime)
            if cfg.auto_port and auto_port is not None:
                sidecar.keep_port(auto_port)  # an auto port is kept while the daemon runs
            self.sidecars[cfg.name] = sidecar
        await self._group().start(_run_sidecar, sidecar, launch)
        return sidecar

    # -- the control socket (control/) ---------------------------------------------------------

    def _control_server(self) -> ControlServer:
        # Registered in the per-user registry since its first instant (main): not on listening.
        from supervisor.control.actions import SidecarActions
        from supervisor.control.server import ControlServer

        actions = SidecarActions(
            sidecars=lambda: self.sidecars,
            document=self.status_document,
            launch=lambda sidecar: self._group().start(_run_sidecar, sidecar, LaunchKind.REQUEST),
            lock=self.ops_lock,
            needs=lambda name: depgraph.needs(self._graph(), name),
            stopping=lambda: self.shutting_down,
        )
        return ControlServer(
            self.state,
            actions,
            self.events,
            self.log,
        )

    async def _stop_all(self, sidecars: list[Sidecar]) -> None:
        async with anyio.create_task_group() as tg:
            for sidecar in sidecars:
                tg.start_soon(_stop_after_dependents, sidecar, sidecars)

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        with anyio.open_signal_receiver(*signals.HANDLED) as received:
            signals.unblock()  # before anything is spawned: children inherit the mask
            workers.limit_threads()
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
                    isolation="cgroup" if self.runtime.isolation is not None else "none",
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
        await self._reclaim_cgroups()
        for cfg in self.cfg.sidecars:
            await self._start(cfg, LaunchKind.BOOT)

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

    async def _reclaim_cgroups(self) -> None:
        """A dead daemon's cgroups of this state dir: every member is reclaimed (stop signal,
        then SIGKILL after stop.timeout), whatever uid it runs as: provably ours."""
        isolation = self.runtime.isolation
        if isolation is None:
            return
        configs = {s.name: s for s in self.cfg.sidecars}

        async def reclaim(name: str, cgroup: cgroups.Cgroup) -> None:
            count = len(cgroup.members())  # never raises: unlistable counts as empty
            if not count:
                return
            stop = configs[name].stop if name in configs else StopConfig()
            with anyio.CancelScope(shield=True):
                await cgroup.stop(stop.signal, stop.timeout_s)
            self.log.info(
                "cgroup_leftovers_killed", sidecar=name, count=count, path=str(cgroup.path)
            )

        async with anyio.create_task_group() as tg:
            for name, cgroup in isolation.existing():
                tg.start_soon(reclaim, name, cgroup)

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
                # Each stop signals its group before anything is logged; dependents stop first
                # (a sidecar nobody depends on is signalled at once).
                for sidecar in sidecars:
                    tg.start_soon(_stop_after_dependents, sidecar, sidecars)
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
            await self._stop_adopted()
            self.left_behind = any(not s.finished or s.abandoned for s in sidecars)
            with anyio.move_on_after(KILL_GRACE_S):
                await self.status.write_now()

    async def _stop_adopted(self) -> None:
        """Orphans of our sidecars' trees that we adopted as their subreaper (a double fork
        while a child ran): provably ours (docs/evidence.md), and nothing else stops them."""
        if not self.subreaper:
            return
        from supervisor.reconcile.kill import stop_left

        adopted = await workers.run_sync(reaper.adopted_identities)
        if not adopted:
            return
        with anyio.move_on_after(ADOPTED_STOP_S + KILL_GRACE_S):
            stopped = await stop_left(
                adopted, stop_signal=signal.SIGTERM, stop_timeout_s=ADOPTED_STOP_S
            )
            if stopped:
                self.log.info("adopted_stopped", count=len(stopped), pids=stopped)

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
            from supervisor.core.reload import plan_reload

            plan = plan_reload(self.cfg.sidecars, new.sidecars)
            auto_ports = {n: s.port for n, s in self.sidecars.items() if s.config.auto_port}
            await self._stop_all([self.sidecars[n] for n in plan.to_stop])
            for name in plan.to_stop:
                del self.sidecars[name]
            # Inherited sockets stay bound unless their sidecar is gone or moves elsewhere (an
            # auto port stays where it is).
            kept = {s.name: auto_ports.get(s.name) if s.auto_port else s.port for s in new.sidecars}
            self.runtime.sockets.retain(
                {
                    s.name: (s.host, port)
                    for s in new.sidecars
                    if s.socket.inherit and (port := kept[s.name])
                }
            )
            self.cfg = new
            started = [
                await self._start(cfg, LaunchKind.RELOAD, auto_port=auto_ports.get(cfg.name))
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
        for key in ("state_dir", "log_file", "log_max_bytes", "log_backups", "isolation"):
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
            await self._group().start(_run_sidecar, sidecar, LaunchKind.REQUEST)


async def _run_sidecar(
    sidecar: Sidecar,
    launch: LaunchKind,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await sidecar.run(launch=launch, task_status=task_status)


async def _stop_after_dependents(sidecar: Sidecar, among: list[Sidecar]) -> None:
    """Stop `sidecar` once every sidecar of `among` that depends on it has finished: stop runs
    in the reverse order of start (the graph is acyclic: config validation)."""
    for other in among:
        if other is not sidecar and sidecar.name in other.config.depends_on:
            await other.wait_finished()
    await sidecar.stop()


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
        await workers.run_sync(reaper.reap_adopted)
        async for _ in exits:
            # Most exits are of our own sidecars (their pidfds see them): a trip to a worker
            # thread per SIGCHLD only when an adopted orphan is among our children at all.
            if reaper.any_adopted():
                await workers.run_sync(reaper.reap_adopted)
