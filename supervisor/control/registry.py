"""The per-user registry of running daemons, so that commands find one without being told where.

One JSON file per state dir, `daemon-<checksum of the state dir>.json`, in the user runtime dir
(`paths.runtime_dir`): `{"pid", "create_time", "state_dir", "config", "started_at"}`. A daemon
writes its entry right after it takes its lock (findable from its first instant) and removes it
when it exits. An entry is
only a pointer: readers verify it (the state dir's `supervisor.pid` names the same live `supervisor
run` of our uid, pid and create time) and remove entries whose process is gone.

The folder must be ours: not a symlink, owned by our uid, not writable by group or others, in a
parent that others cannot replace it in. It is held open and used through its fd (statedir).
"""

from __future__ import annotations

import contextlib
import os
import stat
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from supervisor.errors import EXIT_USAGE, StateDirError, SupervisorError
from supervisor.system import paths
from supervisor.system.statedir import StateDir, float_field, int_field

if TYPE_CHECKING:
    from supervisor.reconcile import diagnose

PREFIX = "daemon-"
SUFFIX = ".json"
MAX_ENTRIES = 256  # more files than this is not a registry of one user's daemons


class RegistryError(SupervisorError):
    """The registry folder cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"the registry of running daemons {path} is unusable: {reason}; "
            f"set ${paths.RUNTIME_DIR_ENV} to a folder of your own, or pass --state-dir"
        )


class Entry(NamedTuple):
    pid: int
    create_time: float
    state_dir: Path
    config: str | None
    file: str  # its name in the registry folder


def entry_name(state_dir: Path) -> str:
    """A fixed name per state dir. 64 bits of two checksums: hashlib would cost `supervisor
    status` ~17 ms of OpenSSL start-up, and one user has a handful of state dirs, not 2**32."""
    data = os.fsencode(str(state_dir))
    return f"{PREFIX}{zlib.crc32(data):08x}{zlib.adler32(data):08x}{SUFFIX}"


def _check_parent(folder: Path) -> None:
    """Nobody else may replace our folder: its parent is ours or root's, and either not
    writable by others or sticky (/tmp)."""
    try:
        info = os.stat(folder.parent)
    except OSError as exc:
        raise RegistryError(folder, f"its parent cannot be read: {exc.strerror}") from None
    if info.st_uid not in (os.getuid(), 0):
        raise RegistryError(folder, f"its parent belongs to uid {info.st_uid}")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise RegistryError(folder, "its parent is writable by others")


def open_folder(*, create: bool) -> StateDir:
    """The registry folder, held open; FileNotFoundError if it does not exist (and not `create`)."""
    folder = paths.runtime_dir()
    if create:
        # A fallback like <tmp>/runtime-<uid> may not exist yet: ours, private, one level only.
        with contextlib.suppress(OSError):  # if that fails, the checks below say why
            os.mkdir(folder.parent, 0o700)
    elif os.path.lexists(folder.parent):
        # A reader too: another user's <tmp>/runtime-<uid> (squatted before we made it) must
        # be reported as what it is, never read as "no daemon is running".
        _check_parent(folder)
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            raise RegistryError(folder, "it is a symbolic link")
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        raise RegistryError(folder, exc.strerror or str(exc)) from None
    _check_parent(folder)
    try:
        return StateDir.open(folder, create=create)
    except StateDirError as exc:
        raise RegistryError(folder, exc.reason) from None


def register(
    state_dir: Path, pid: int, create_time: float, config: str | None, started_at: str
) -> None:
    """Write (replace) the entry of the daemon of `state_dir`. Raises RegistryError."""
    record = {
        "pid": pid,
        "create_time": create_time,
        "state_dir": str(state_dir),
        "config": config,
        "started_at": started_at,
    }
    with open_folder(create=True) as folder:
        try:
            # A pointer for the life of a process: no fsync on the way to the first spawn.
            folder.write(entry_name(state_dir), record, durable=False)
        except OSError as exc:
            raise RegistryError(folder.path, exc.strerror or str(exc)) from None


def unregister(state_dir: Path, pid: int) -> None:
    """Remove the entry of `state_dir` if it still names `pid` (never raises)."""
    try:
        with open_folder(create=False) as folder:
            name = entry_name(state_dir)
            if int_field(folder.read(name), "pid") == pid:
                folder.remove(name)
    except (OSError, SupervisorError):
        pass


def entries() -> list[Entry]:
    """Every well-formed entry (unverified); [] without a registry. RegistryError when the
    folder is there but not ours: a squatted registry is not "nothing is running"."""
    try:
        folder = open_folder(create=False)
    except OSError:
        return []
    found = []
    with folder:
        try:
            names = sorted(os.listdir(folder.fd))[:MAX_ENTRIES]
        except OSError:
            return []
        for name in names:
            if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
                continue
            record = folder.read(name)
            pid = int_field(record, "pid")
            created = float_field(record, "create_time")
            where = None if record is None else record.get("state_dir")
            config = None if record is None else record.get("config")
            if pid is None or created is None or not isinstance(where, str):
                continue
            state_dir = Path(where)
            if not state_dir.is_absolute() or entry_name(state_dir) != name:
                continue
            found.append(
                Entry(
                    pid=pid,
                    create_time=created,
                    state_dir=state_dir,
                    config=config if isinstance(config, str) else None,
                    file=name,
                )
            )
    return found


def remove(entry: Entry) -> None:
    """Remove a stale entry (only if the file still names the same process)."""
    try:
        with open_folder(create=False) as folder:
            record = folder.read(entry.file)
            if int_field(record, "pid") == entry.pid and float_field(record, "create_time") == (
                entry.create_time
            ):
                folder.remove(entry.file)
    except (OSError, SupervisorError):
        pass


def known_ledgers(state_dirs: Sequence[Path]) -> list[diagnose.Known]:
    """The spawn ledgers `port` reads: those of `state_dirs` and of every daemon in the
    per-user registry (running, or dead and not cleaned up yet); read-only."""
    from supervisor import control
    from supervisor.evidence.ledger import Ledger
    from supervisor.reconcile.diagnose import Known

    listed = [entry.state_dir for entry in entries()]  # before discover() cleans up
    daemons = {d.state_dir: (d.pid, d.create_time) for d in control.discover()}
    known = []
    for folder in dict.fromkeys([*listed, *daemons, *state_dirs]):
        try:
            with StateDir.open(folder, create=False) as state:
                spawns = Ledger(state, prune=False).entries()
        except (OSError, SupervisorError):
            continue  # absent, unreadable or not ours: its ledger proves nothing
        known.append(Known(folder, spawns, daemons.get(folder)))
    return known
