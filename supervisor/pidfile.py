"""Atomic JSON records in the state dir (PID files, status.json) and a tolerant reader.

Writes go to a temp file in the same dir, fsync, then rename, so readers never see a torn file;
nothing is ever written or read through a symlink (a planted link must not redirect our writes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# A PID file or status.json is a few hundred bytes; anything huge is garbage, not data to load.
MAX_RECORD_BYTES = 1 << 20


class RecordError(OSError):
    """A record could not be written (the state dir is unusable, the disk is full, ...)."""


def ensure_dir(path: Path, *, allow_symlink: bool = False) -> None:
    """Create `path` (0700) if needed; refuse a non-directory, and a symlink unless allowed.

    Only the state dir itself may be a symlink (the user's choice); a link planted at a
    sidecar's dir inside it would redirect our writes outside the state dir.
    """
    try:
        os.makedirs(path.parent, mode=DIR_MODE, exist_ok=True)
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        if not allow_symlink:
            raise RecordError(errno.ELOOP, f"{path} is a symbolic link; refusing to follow it")
        info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory")


def _parent_is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path.parent).st_mode)
    except OSError:
        return False


def write(path: Path, record: Mapping[str, object]) -> None:
    """Atomically replace `path` with `record` as JSON (mode 0600)."""
    data = (json.dumps(record, indent=None, separators=(", ", ": ")) + "\n").encode()
    if not _parent_is_real_dir(path):
        raise RecordError(errno.ELOOP, f"cannot write {path}: its folder is not a real directory")
    # A unique temp name: a status write in a worker thread may overlap one on the loop.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
        )
    except OSError as exc:
        raise RecordError(exc.errno, f"cannot write {path}: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        # rename() replaces a symlink at `path` itself rather than writing through it.
        os.rename(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise RecordError(exc.errno, f"cannot write {path}: {exc.strerror}") from None


def read(path: Path) -> dict[str, object] | None:
    """The JSON object at `path`, or None if missing, unreadable, huge, a symlink or not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        data = os.read(fd, MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def remove(path: Path) -> bool:
    """Remove `path` if it exists; True if something was removed."""
    if not _parent_is_real_dir(path):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError:
        return False
    return True


def int_field(record: Mapping[str, object] | None, key: str) -> int | None:
    value = None if record is None else record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def float_field(record: Mapping[str, object] | None, key: str) -> float | None:
    value = None if record is None else record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
