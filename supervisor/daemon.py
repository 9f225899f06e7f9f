"""The daemon: the task group, signals, start-up, reload and shutdown of every sidecar."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from supervisor import config, exitwatch, logs, notify, paths, procs, signals, status
from supervisor.config import Config, LogFormat, LogLevel, SidecarConfig
from supervisor.errors import StateDirError, SupervisorError
from supervisor.logfile import LogFile
from supervisor.notify import Notifier
from supervisor.reconcile import sweep
from supervisor.reload import plan_reload
from supervisor.runtime import Runtime
from supervisor.sidecar import Sidecar
from supervisor.statedir import PID_NAME, StateDir
from supervisor.statuswriter import StatusWriter
from supervisor.tags import OwnerTag, format_owner_tag

PARENT_EXITED = -1  # a pseudo-signal on the command stream
KILL_GRACE_S = 5.0  # after the shutdown bound: SIGKILLed groups get this long to be reaped


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
    config_path = paths.config_path(args.config)
    cfg = config.load(config_path)
    state_path = paths.state_dir(args.state_dir, cfg.supervisor.state_dir)
    log_format = LogFormat(args.log_format) if args.log_format else cfg.supervisor.log_format
    log_level = LogLevel(args.log_level) if args.log_level else cfg.supervisor.log_level
    # A symlinked state dir is the user's choice: messages show where it really is.
    with StateDir.open(state_path, create=True) as state:
        state.path = Path(os.path.realpath(state_path))
        logs.configure(log_format, log_level)
        with state.lock():
            log_file = _open_log_file(cfg, args)
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
    daemon = cfg.supervisor
    return LogFile.open(path, max_bytes=daemon.log_max_bytes, backups=daemon.log_backups)


def _run(
    cfg: Config, config_path: Path, state: StateDir, args: RunOptions, log_file: LogFile | None
) -> None:
    me = os.getpid()
    daemon = Daemon(
        cfg,
        config_path=config_path,
        state=state,
        pid=me,
        create_time=procs.create_time(me) or time.time(),
        exit_with_parent=args.exit_with_parent or cfg.supervisor.exit_with_parent,
        interactive=args.interactive,
        log_overrides=(args.log_format, args.log_level),
        previous=sweep.previous_owner(state.read(PID_NAME)),
        log_file=log_file,
    )
    try:
        state.write(PID_NAME, daemon.pid_record())
    except OSError as exc:
        raise StateDirError(state.path, f"cannot write {PID_NAME}: {exc.strerror}") from None
    try:
        anyio.run(daemon.run)
    finally:
        state.remove(PID_NAME)


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
        previous: OwnerTag | None = None,
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
        self.previous = previous  # the daemon before us, if it exited uncleanly
        self.log = logs.get()
        self.notifier = Notifier.from_env()
        self.sidecars: dict[str, Sidecar] = {}
        self.shutting_down = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._last_summary = ""
        self.status = StatusWriter(state, self.status_document, self.log)
        stdin_tty = False
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stdin_tty = os.isatty(0)
        self.runtime = Runtime(
            state=state,
            our_pid=pid,
            our_create_time=create_time,
            owner_tag=format_owner_tag(pid, create_time),
            base_env={k: v for k, v in os.environ.items() if k not in notify.ENV_VARS},
            interactive_allowed=interactive,
            stdin_is_tty=stdin_tty,
            on_change=self._sidecar_changed,
        )

    def pid_record(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "started_at": status.iso_utc(self.started_at),
            "config": str(self.config_path),
        }

    # -- status --------------------------------------------------------------------------------

    def status_document(self) -> dict[str, object]:
        return status.document(self.pid_record(), [s.record() for s in self.sidecars.values()])

    def _sidecar_changed(self, _sidecar: Sidecar) -> None:
        self.status.changed()
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

    async def _stop_all(self, sidecars: list[Sidecar]) -> None:
        async with anyio.create_task_group() as tg:
            for sidecar in sidecars:
                tg.start_soon(sidecar.stop)

    # -- main loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        send, receive = anyio.create_memory_object_stream[int](64)
        with anyio.open_signal_receiver(*signals.HANDLED) as received:
            signals.unblock()  # before anything is spawned: children inherit the mask
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(_pump, received, send.clone())
                tg.start_soon(self.status.run)
                self.log.info(
                    "daemon_started",
                    pid=self.pid,
                    config=str(self.config_path),
                    state_dir=str(self.state.path),
                    sidecars=[s.name for s in self.cfg.sidecars],
                    interactive=self.runtime.interactive_allowed,
                )
                if self.previous is not None:
                    await sweep.sweep(
                        self.previous, {s.name: s for s in self.cfg.sidecars}, self.log
                    )
                for cfg in self.cfg.sidecars:
                    await self._start(cfg, interactive=True)
                await self.status.write_now()
                self.notifier.ready()
                if self.exit_with_parent:
                    tg.start_soon(_watch_parent, self.parent_pid, send.clone())
                interval = self.notifier.watchdog_interval_s()
                if interval:
                    tg.start_soon(_watchdog, self.notifier, interval)
                send.close()
                reason = await self._serve(receive)
                await self._shutdown(reason, receive)
                tg.cancel_scope.cancel()
        self.log.info("daemon_stopped", pid=self.pid)

    async def _serve(self, commands: MemoryObjectReceiveStream[int]) -> str:
        """Handle signals until one asks for shutdown; returns the reason."""
        async for signum in commands:
            match signum:
                case signal.SIGTERM | signal.SIGINT:
                    return signal.Signals(signum).name
                case signal.SIGHUP:
                    await self._reload()
                case signal.SIGUSR1:
                    await self._restart_all()
                case signal.SIGUSR2:
                    await self._dump_status()
                case _ if signum == PARENT_EXITED:
                    self.log.info("parent_exited", parent_pid=self.parent_pid)
                    return "parent_exited"
        return "signals closed"

    async def _shutdown(self, reason: str, commands: MemoryObjectReceiveStream[int]) -> None:
        self.shutting_down = True
        self.log.info("daemon_stopping", reason=reason)
        self.notifier.stopping()
        sidecars = list(self.sidecars.values())
        async with anyio.create_task_group() as tg:

            async def stop_everything() -> None:
                with anyio.CancelScope(shield=True):
                    with anyio.move_on_after(self.cfg.supervisor.shutdown_timeout_s):
                        await self._stop_all(sidecars)
                        tg.cancel_scope.cancel()
                        return
                    self.log.warning(
                        "shutdown_timeout_exceeded",
                        timeout_s=self.cfg.supervisor.shutdown_timeout_s,
                    )
                    self._kill_all()
                    with anyio.move_on_after(KILL_GRACE_S):
                        await self._stop_all(sidecars)
                tg.cancel_scope.cancel()

            tg.start_soon(stop_everything)
            # Meanwhile: a second SIGTERM/SIGINT kills every group now; HUP and USR1 are ignored.
            async for signum in commands:
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self.log.warning("shutdown_forced", signal=signal.Signals(signum).name)
                    self._kill_all()
                elif signum == signal.SIGUSR2:
                    await self._dump_status()
        await self.status.write_now()

    def _kill_all(self) -> None:
        for sidecar in self.sidecars.values():
            sidecar.kill_now()

    async def _dump_status(self) -> None:
        doc = await self.status.write_now()
        self.log.info("status_dumped", status=doc)

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            try:
                new = config.load(self.config_path)
            except SupervisorError as exc:
                self.log.error("config_invalid", path=str(self.config_path), error=exc.message)
                return
            self._apply_daemon_settings(new)
            plan = plan_reload(self.cfg.sidecars, new.sidecars)
            await self._stop_all([self.sidecars[n] for n in plan.to_stop])
            for name in plan.to_stop:
                del self.sidecars[name]
            self.cfg = new
            for cfg in new.sidecars:
                if cfg.name in plan.to_start:
                    await self._start(cfg, interactive=True)
            self.sidecars = {s.name: self.sidecars[s.name] for s in new.sidecars}
            await self.status.write_now()
            self.log.info(
                "config_reloaded",
                added=list(plan.added),
                removed=list(plan.removed),
                changed=list(plan.changed),
                unchanged=list(plan.unchanged),
            )
        finally:
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


async def _pump(received: AsyncIterator[signal.Signals], send: MemoryObjectSendStream[int]) -> None:
    async with send:
        async for signum in received:
            await send.send(int(signum))


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    while True:
        notifier.watchdog()
        await anyio.sleep(interval_s)


async def _watch_parent(parent_pid: int, send: MemoryObjectSendStream[int]) -> None:
    """Report when the launching process exits: pidfd (Linux), kqueue (macOS), else polling.

    Never by testing ppid == 1: under a subreaper an orphan is reparented elsewhere.
    """
    async with send:
        await _wait_pid_exit(parent_pid)
        await send.send(PARENT_EXITED)


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
