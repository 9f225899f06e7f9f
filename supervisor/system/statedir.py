"""The state dir, held open: its files are reached only through the directory's fd, never by path.

Every operation is relative to an open directory handle (`dir_fd=`) and never follows a symlink
(`O_NOFOLLOW`, `unlinkat`), so swapping a path component for a link between a check and a use can
never redirect a write or an unlink. Only the state dir itself may be a symlink (the user's
choice); it must belong to our uid and not be writable by group or others. Records are written
atomically (temp file, fsync, rename) and read tolerantly: anything missing, huge, a symlink or
not a JSON object reads as None.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from supervisor.errors import AlreadyRunningError, StateDirError

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_NAME = "supervisor.lock"
PID_NAME = "supervisor.pid"
STATUS_NAME = "status.json"
SIDECAR_PID_NAME = "sidecar.pid"
# A PID file or status.json is a few hundred bytes; anything huge is garbage, not data to load.
MAX_RECORD_BYTES = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class RecordError(OSError):
    """A record could not be written (the folder is unusable, the disk is full, ...)."""


def check_owner(path: Path, info: os.stat_result) -> None:
    """Refuse a state dir of another uid, or one that group or others may write into."""
    uid = os.getuid()
    if info.st_uid != uid:
        raise StateDirError(
            path,
            f"it belongs to uid {info.st_uid}, not to this user (uid {uid}); "
            "use a state dir of your own",
            remedy=f"pass --state-dir with a folder you own, or chown {uid} {path}",
        )
    if info.st_mode & 0o022:
        raise StateDirError(
            path,
            f"group or others may write into it (mode {stat.S_IMODE(info.st_mode):03o})",
            remedy=f"chmod 700 {path}",
        )


def write_all(fd: int, data: bytes) -> None:
    """All of `data` to `fd` (short writes continued)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_durably(fd: int, data: bytes) -> None:
    """All of `data` to `fd`, then fsync."""
    write_all(fd, data)
    os.fsync(fd)


class StateDir:
    """One open directory: the state dir itself, or a sidecar's folder inside it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def open(cls, path: Path, *, create: bool) -> StateDir:
        """Open (and with `create`, make, 0700) the state dir; its owner and mode are checked.

        Raises StateDirError when it is unusable; without `create`, FileNotFoundError or
        NotADirectoryError when there is no such directory (for a reader: nothing to read).
        """
        if create:
            try:
                os.makedirs(path, mode=DIR_MODE, exist_ok=True)
            except OSError as exc:
                raise StateDirError(path, exc.strerror or str(exc)) from None
        try:
            fd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError:
            if create:
                raise StateDirError(path, "it vanished while being created") from None
            raise
        except NotADirectoryError:
            if create:
                raise StateDirError(path, "it is not a directory") from None
            raise
        except OSError as exc:
            raise StateDirError(path, exc.strerror or str(exc)) from None
        try:
            check_owner(path, os.fstat(fd))
            if create and not os.access(path, os.R_OK | os.W_OK | os.X_OK):
                raise StateDirError(path, "not readable and writable by this user")
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"the state dir {self.path} is closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- folders -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def subdir(self, name: str, *, create: bool) -> Iterator[StateDir]:
        """A folder inside, opened without following a symlink (a planted link is refused)."""
        _check_name(name)
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, DIR_MODE, dir_fd=self.fd)
        try:
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RecordError(
                    errno.ELOOP,
                    f"{self.path / name} is a symbolic link or not a directory; refusing it",
                ) from None
            raise
        sub = StateDir(self.path / name, fd)
        try:
            yield sub
        finally:
            sub.close()

    def subdir_names(self) -> list[str]:
        """The names of the folders inside (symbolic links excluded), sorted."""
        with os.scandir(self.fd) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))

    # -- records -------------------------------------------------------------------------------

    def write(self, name: str, record: Mapping[str, object], *, durable: bool = True) -> None:
        """Atomically replace `name` with `record` as JSON (mode 0600); fsynced if `durable`."""
        data = (json.dumps(record, indent=None, separators=(", ", ": ")) + "\n").encode()
        self.write_bytes(name, data, durable=durable)

    def write_bytes(self, name: str, data: bytes, *, durable: bool = True) -> None:
        _check_name(name)
        # A unique temp name: a status write in a worker thread may overlap one on the loop.
        tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        where = self.path / name
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                FILE_MODE,
                dir_fd=self.fd,
            )
        except OSError as exc:
            raise RecordError(exc.errno, f"cannot write {where}: {exc.strerror}") from None
        try:
            try:
                os.fchmod(fd, FILE_MODE)
                if durable:
                    write_durably(fd, data)
                else:
                    write_all(fd, data)
            finally:
                os.close(fd)
            # rename() replaces a symlink at `name` itself rather than writing through it.
            os.rename(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self.fd)
            raise RecordError(exc.errno, f"cannot write {where}: {exc.strerror}") from None

    def read(self, name: str) -> dict[str, object] | None:
        """The JSON object in `name`, or None if missing, unreadable, huge, a link or not JSON."""
        data = self.read_bytes(name, MAX_RECORD_BYTES)
        if data is None:
            return None
        try:
            record = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    def read_bytes(self, name: str, limit: int) -> bytes | None:
        """The bytes of regular file `name` (None if missing, a link, or over `limit`)."""
        _check_name(name)
        try:
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(name, flags, dir_fd=self.fd)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                return None
            return os.read(fd, limit + 1)
        except OSError:
            return None
        finally:
            os.close(fd)

    def remove(self, name: str) -> bool:
        """Remove `name` (a link itself, never its target); True if something was removed."""
        _check_name(name)
        try:
            os.unlink(name, dir_fd=self.fd)
        except OSError:
            return False
        return True

    def sweep_temp_files(self, alive: Callable[[int], bool]) -> int:
        """Remove the temp files (`.NAME.PID.HEX.tmp`, see write_bytes) of writers that are not
        `alive`, here and one folder down: a daemon SIGKILLed mid-write leaves them. Call it
        holding the lock. Returns how many were removed."""
        removed = 0
        try:
            folders = ["", *self.subdir_names()]
        except OSError:
            return 0
        for folder in folders:
            try:
                with contextlib.ExitStack() as stack:
                    here = self
                    if folder:
                        here = stack.enter_context(self.subdir(folder, create=False))
                    for name in os.listdir(here.fd):
                        pid = _temp_writer(name)
                        if pid is not None and not alive(pid) and here.remove(name):
                            removed += 1
            except OSError:
                continue  # unreadable: nothing of ours to sweep there
        return removed

    # -- the daemon's lock ---------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `supervisor.lock` exclusively (its fd is not inherited by children)."""
        try:
            fd = os.open(
                LOCK_NAME,
                os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                FILE_MODE,
                dir_fd=self.fd,
            )
        except OSError as exc:
            raise StateDirError(self.path, f"cannot open {LOCK_NAME}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                record = self.read(PID_NAME)
                raise AlreadyRunningError(self.path, int_field(record, "pid")) from None
            yield
        finally:
            os.close(fd)


def _temp_writer(name: str) -> int | None:
    """The writer's pid in a temp file name `.NAME.PID.HEX.tmp`; None for any other name."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    parts = name[1:-4].rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit() or len(parts[2]) != 8:
        return None
    return int(parts[1])


def _check_name(name: str) -> None:
    # Names are ours (constants, validated sidecar names): a separator would be a bug.
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")


def int_field(record: Mapping[str, object] | None, key: str) -> int | None:
    value = None if record is None else record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def float_field(record: Mapping[str, object] | None, key: str) -> float | None:
    value = None if record is None else record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
