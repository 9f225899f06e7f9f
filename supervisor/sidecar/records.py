"""What one attempt records about its child: its spawn in the ledger (from the spawn until it is
reaped) and its PID file (from ready until it exits)."""

from __future__ import annotations

import time

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import SidecarConfig
from supervisor.core import status
from supervisor.evidence import ledger
from supervisor.sidecar.runtime import Runtime
from supervisor.system import children, workers
from supervisor.system.statedir import SIDECAR_PID_NAME, StateDir, int_field


class Records:
    """One attempt's ledger entry and PID file."""

    def __init__(self, config: SidecarConfig, rt: Runtime, log: FilteringBoundLogger) -> None:
        self.config = config
        self.rt = rt
        self.log = log
        self._spawn: ledger.Spawn | None = None

    @property
    def name(self) -> str:
        return self.config.name

    # -- the spawn ledger ------------------------------------------------------------------------

    async def record_spawn(self, child: children.Child, recorded: anyio.Event) -> None:
        """Into the ledger as soon as the pid exists, in one trip to a worker thread: reading
        the create time right after the fork waits for the child's exec (~0.2 ms, up to 5 ms
        measured), which must not hold up the event loop on the respawn path."""
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

    def forget_spawn(self, child: children.Child) -> None:
        """Out of the ledger once the child is reaped: an entry proves only its own process
        (ledger.py), so once that is gone it proves nothing, and a session number left in it
        could only ever match a stranger. An unlink, on the loop (as the PID file's removal)."""
        spawn = self._spawn
        if spawn is None or child.abandoned:
            return
        self.rt.ledger.forget(spawn)

    # -- the PID file --------------------------------------------------------------------------

    @property
    def pidfile_path(self) -> str:
        return str(self.rt.state.path / self.name / SIDECAR_PID_NAME)

    def write_pidfile(self, child: children.Child) -> None:
        """The ready child's PID file; a failure to write it is logged, not raised."""
        try:
            # On the event loop, as its removal: a new small file and a rename, not fsynced
            # (~50 us on ext4, ~25 on tmpfs), where a trip to a worker thread and back costs
            # more CPU than the write (two thread wake-ups; measured in a crash storm, issue 30).
            # A state dir on a network file system that hangs would stall the loop here, as
            # the removal always could: a trade-off made for the usual local state dir.
            self._write_pidfile(self._pid_record(child))
            self.log.info("pidfile_written", path=str(self.pidfile_path), pid=child.pid)
        except OSError as exc:
            self.log.error("pidfile_write_failed", path=str(self.pidfile_path), error=str(exc))

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
        with self.rt.state.subdir(self.name, create=True) as folder:
            folder.write(SIDECAR_PID_NAME, record, durable=False)

    def remove_pidfile(self) -> None:
        try:
            with self.rt.state.subdir(self.name, create=False) as folder:
                removed = folder.remove(SIDECAR_PID_NAME)
        except OSError:
            removed = False
        if removed:
            self.log.info("pidfile_removed", path=self.pidfile_path)


def read_recorded_pid(state: StateDir, name: str) -> int | None:
    """The pid in `<name>/sidecar.pid` (annotation for the preflight's log line only)."""
    try:
        with state.subdir(name, create=False) as folder:
            return int_field(folder.read(SIDECAR_PID_NAME), "pid")
    except OSError:
        return None
