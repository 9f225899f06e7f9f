"""The spawn ledger: every process this state dir's daemons spawned, recorded as it starts.

It is evidence as strong as the env tags and it survives what they do not: a server that
rewrites its command line and environment (nginx, redis, setproctitle) and a daemon killed
before it could sweep. One file per spawn in `<state_dir>/_spawns/` (a name no sidecar can
have), JSON:

    {"pid": 4242, "create_time": 1767225600.25, "boot_id": "6f1c...", "sid": 4242,
     "pgid": 4242, "command": ["redis-server", "--port", "6380"], "sidecar": "cache",
     "daemon_pid": 4100, "daemon_create_time": 1767225590.5, "spawned_at": "2026-01-01T00:00:00Z"}

An entry is written (atomically; not fsynced, see `Ledger.record`) right after the fork.

What an entry proves (and nothing more): exactly one process, the one with that pid and create
time in that boot (`boot_id`: /proc/sys/kernel/random/boot_id on Linux, the boot time
elsewhere). Entries of another boot are dropped when read, and pruned. A process is proven
ours when it is that process, when its chain of living parents reaches it, or when it is in
the session or group that process leads *while that leader is alive* (its identity checked
then: a session or group number cannot be handed to anyone else while its leader lives). A
matching session number after the leader died proves nothing: after a reboot, a pid wrap or a
clean stop, a stranger's double-forked daemon may carry it (issue 24; see
docs/reliability.md). `proven_by` is that rule, pure; `evidence.find_spawn` gathers its facts.

The window before the entry exists (the fork to the write: about 12 ms for a daemon's first
spawn, see README.md) is covered by the env tags: a child carries them from its very first
instruction, and a server clobbers them only once it runs its own start-up.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from supervisor.system.proctime import same_create_time
from supervisor.system.statedir import StateDir, float_field, int_field

LEDGER_DIR = "_spawns"  # a leading "_" can start no sidecar name: the folders never collide


@dataclass(frozen=True)
class Spawn:
    pid: int
    create_time: float
    boot_id: str
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
            "boot_id": self.boot_id,
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
    boot_id = record.get("boot_id")
    if not isinstance(boot_id, str) or not boot_id:
        return None  # written before boot ids were recorded: its boot cannot be told
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
        boot_id=boot_id,
        sid=sid,
        pgid=pgid,
        command=tuple(command),
        sidecar=sidecar,
        daemon_pid=daemon_pid,
        daemon_create_time=daemon_created,
        spawned_at=spawned_at if isinstance(spawned_at, str) else "",
    )


@dataclass(frozen=True)
class Lineage:
    """The facts that may prove one living process ours (gathered by evidence.find_spawn).

    `chain`: the process itself, then its living parents, nearest first, each (pid, create
    time). `leaders`: the (pid, create time) of whatever now has the pid of the session and of
    the group the process is in (None: no process has that pid, or its identity could not be
    read).
    """

    chain: tuple[tuple[int, float], ...]
    sid: int | None
    pgid: int | None
    session_leader: tuple[int, float] | None
    group_leader: tuple[int, float] | None


def is_process(entry: Spawn, pid: int, create_time: float) -> bool:
    """Whether (pid, create time) is the very process the entry recorded (pure)."""
    return pid == entry.pid and same_create_time(create_time, entry.create_time)


def proven_by(lineage: Lineage, spawns: Sequence[Spawn]) -> Spawn | None:
    """The entry that proves the process ours, if any (pure). See the module docstring."""
    for pid, created in lineage.chain:
        for entry in spawns:
            if is_process(entry, pid, created):
                return entry
    for number, leader in (
        (lineage.sid, lineage.session_leader),
        (lineage.pgid, lineage.group_leader),
    ):
        if number is None or leader is None or leader[0] != number:
            continue
        for entry in spawns:
            # The leader is alive now, with the entry's identity: the number is its own.
            if is_process(entry, *leader):
                return entry
    return None


def current_boot_id() -> str:
    """This boot's identity: the kernel's boot id on Linux, the boot time elsewhere."""
    if sys.platform == "linux":
        try:
            with open("/proc/sys/kernel/random/boot_id") as file:
                return file.read().strip()
        except OSError:
            pass
    from supervisor.system import procs

    return f"boot-time-{procs.boot_time():.0f}"


class Ledger:
    """The ledger of one state dir. Blocking (file writes, listings): call it from a worker
    thread."""

    def __init__(self, state: StateDir, boot_id: str | None = None, *, prune: bool = True) -> None:
        self.state = state
        self.boot_id = current_boot_id() if boot_id is None else boot_id
        self.prune = prune  # False for a reader that must not write (`supervisor port`)

    def record(self, spawn: Spawn) -> None:
        # Not fsynced: an entry describes a living process, and a crash of the machine leaves
        # none; what a daemon killed outright wrote is in the page cache for the next one.
        with self.state.subdir(LEDGER_DIR, create=True) as folder:
            folder.write(spawn.file_name, spawn.record(), durable=False)

    def forget(self, spawn: Spawn) -> None:
        with contextlib.suppress(OSError), self.state.subdir(LEDGER_DIR, create=False) as folder:
            folder.remove(spawn.file_name)

    def entries(self) -> list[Spawn]:
        """Every entry of this boot, of every generation (none if the ledger does not exist
        yet). Entries of another boot (or unreadable ones) prove nothing: they are pruned."""
        try:
            with self.state.subdir(LEDGER_DIR, create=False) as folder:
                names = [n for n in os.listdir(folder.fd) if n.endswith(".json")]
                found: list[Spawn] = []
                for name in sorted(names):
                    entry = parse(folder.read(name))
                    if entry is not None and entry.boot_id == self.boot_id:
                        found.append(entry)
                    elif self.prune:
                        with contextlib.suppress(OSError):
                            folder.remove(name)
                return found
        except OSError:
            return []
