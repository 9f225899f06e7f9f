"""The spawn ledger: every process this state dir's daemons spawned, recorded as it starts.

It is evidence as strong as the env tags and it survives what they do not: a server that
rewrites its command line and environment (nginx, redis, setproctitle) and a daemon killed
before it could sweep. One file per spawn in `<state_dir>/_spawns/` (a name no sidecar can
have), JSON:

    {"pid": 4242, "create_time": 1767225600.25, "sid": 4242, "pgid": 4242,
     "command": ["redis-server", "--port", "6380"], "sidecar": "cache",
     "daemon_pid": 4100, "daemon_create_time": 1767225590.5, "spawned_at": "2026-01-01T00:00:00Z"}

An entry is written (atomically; not fsynced, see `Ledger.record`) right after the fork, and
removed only when its
process and every member of its session are provably gone: entries of every earlier daemon
generation stay until their processes are reclaimed or gone.

Why a stranger cannot match: a holder matches an entry when it is that very process (pid and
create time), or a member of its session. A session id is the pid of the process that created
the session; the kernel keeps that pid allocated while any process of the session (or of a
process group with that id) lives, so no stranger can get it and found a session of the same
number while one of ours is left. Once our whole session is gone the number may be recycled:
then a live process with that pid but another create time betrays the stranger, and a member
must have been created after our process was. What remains is a stranger session of that
number whose founder also died, created after ours ended and before our next look — it needs
the pid space to wrap (pid_max) in that window, while the entry was still there; the daemon
prunes an entry as soon as it sees the session empty (after each stop and at every start).

The window before the entry exists (the fork to the write: about 12 ms for a daemon's first
spawn, see README.md) is covered by the env tags: a child carries them from its very first
instruction, and a server clobbers them only once it runs its own start-up.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.system.proctime import CREATE_TIME_TOLERANCE_S, same_create_time
from supervisor.system.statedir import StateDir, float_field, int_field

LEDGER_DIR = "_spawns"  # a leading "_" can start no sidecar name: the folders never collide


@dataclass(frozen=True)
class Spawn:
    pid: int
    create_time: float
    sid: int
    pgid: int
    command: tuple[str, ...]
    sidecar: str
    daemon_pid: int
    daemon_create_time: float
    spawned_at: str

    @property
    def file_name(self) -> str:
        return f"{self.pid}-{round(self.create_time * 100)}.json"

    def record(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "create_time": self.create_time,
            "sid": self.sid,
            "pgid": self.pgid,
            "command": list(self.command),
            "sidecar": self.sidecar,
            "daemon_pid": self.daemon_pid,
            "daemon_create_time": self.daemon_create_time,
            "spawned_at": self.spawned_at,
        }


def parse(record: Mapping[str, object] | None) -> Spawn | None:
    """An entry from its JSON (None for anything garbled: a torn or planted file proves
    nothing)."""
    if record is None:
        return None
    pid, sid, pgid = int_field(record, "pid"), int_field(record, "sid"), int_field(record, "pgid")
    daemon_pid = int_field(record, "daemon_pid")
    created = float_field(record, "create_time")
    daemon_created = float_field(record, "daemon_create_time")
    command, sidecar = record.get("command"), record.get("sidecar")
    if pid is None or sid is None or pgid is None or daemon_pid is None:
        return None
    if created is None or daemon_created is None or not math.isfinite(created + daemon_created):
        return None
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        return None
    if not isinstance(sidecar, str):
        return None
    spawned_at = record.get("spawned_at")
    return Spawn(
        pid=pid,
        create_time=created,
        sid=sid,
        pgid=pgid,
        command=tuple(command),
        sidecar=sidecar,
        daemon_pid=daemon_pid,
        daemon_create_time=daemon_created,
        spawned_at=spawned_at if isinstance(spawned_at, str) else "",
    )


def session_member(
    holder_pid: int,
    holder_create_time: float,
    holder_sid: int | None,
    entry: Spawn,
    *,
    founder_create_time: float | None,
) -> bool:
    """Whether a process is the entry's process or a member of its session (pure).

    `founder_create_time`: the create time of whatever process now has pid `entry.sid`
    (None: no such process).
    """
    if holder_pid == entry.pid and same_create_time(holder_create_time, entry.create_time):
        return True
    if holder_sid is None or holder_sid != entry.sid or entry.sid != entry.pid:
        return False
    if founder_create_time is not None and not same_create_time(
        founder_create_time, entry.create_time
    ):
        return False  # the session's number now belongs to another process: recycled
    return holder_create_time + CREATE_TIME_TOLERANCE_S >= entry.create_time


class Ledger:
    """The ledger of one state dir. Blocking (file writes, listings): call it from a worker
    thread."""

    def __init__(self, state: StateDir) -> None:
        self.state = state

    def record(self, spawn: Spawn) -> None:
        # Not fsynced: an entry describes a living process, and a crash of the machine leaves
        # none; what a daemon killed outright wrote is in the page cache for the next one.
        with self.state.subdir(LEDGER_DIR, create=True) as folder:
            folder.write(spawn.file_name, spawn.record(), durable=False)

    def forget(self, spawn: Spawn) -> None:
        with contextlib.suppress(OSError), self.state.subdir(LEDGER_DIR, create=False) as folder:
            folder.remove(spawn.file_name)

    def entries(self) -> list[Spawn]:
        """Every entry, of every generation (none if the ledger does not exist yet)."""
        try:
            with self.state.subdir(LEDGER_DIR, create=False) as folder:
                names = [n for n in os.listdir(folder.fd) if n.endswith(".json")]
                found = (parse(folder.read(name)) for name in sorted(names))
                return [entry for entry in found if entry is not None]
        except OSError:
            return []
