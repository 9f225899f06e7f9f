"""`supervisor logs`: read a sidecar's output.log - its last lines, then follow it across rotation.

Every file is opened through the state dir's fd without following a symlink, like the daemon
writes them. The last lines continue into `output.log.1`, `.2`, ... when output.log has fewer.
Following polls (every POLL_S): when `output.log` names another file (a rotation) the old one is
read to its end, then any rotated file written meanwhile, then the new one from its start; a
file that shrank (truncated) is read again from its start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection
from pathlib import Path

from supervisor.config import NAME_RE, SidecarConfig
from supervisor.config.parse import MAX_BACKUPS  # no more rotated files than this to look at
from supervisor.errors import EXIT_USAGE, StateDirError, SupervisorError
from supervisor.sidecar.outputlog import OUTPUT_NAME
from supervisor.system.statedir import STATUS_NAME, RecordError, StateDir

POLL_S = 0.1
BLOCK = 65536

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnknownSidecarError(SupervisorError):
    """`logs NAME` for a name that is neither configured nor known to the state dir."""

    exit_code = EXIT_USAGE

    def __init__(self, name: str, state_dir: Path, known: Collection[str]) -> None:
        self.name = name
        self.state_dir = state_dir
        self.known = tuple(sorted(known))
        listed = ", ".join(self.known) if self.known else "none"
        super().__init__(
            f'no sidecar named "{name}" in the config or in {state_dir} (known: {listed}); '
            "check the name, -c or --state-dir"
        )


class OutputDisabledError(SupervisorError):
    """`logs NAME` for a sidecar with `output.file = false`."""

    exit_code = EXIT_USAGE

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f'sidecar "{name}" has output.file = false, so there is no output.log; '
            "its lines are child_output events in the daemon's log"
        )


def _open_folder(state_dir: Path, name: str) -> int | None:
    """A new fd of `<state_dir>/<name>` (no symlink followed inside the state dir), or None."""
    try:
        with StateDir.open(state_dir, create=False) as state, state.subdir(name, create=False) as f:
            return os.dup(f.fd)
    except (FileNotFoundError, NotADirectoryError, RecordError):
        return None
    except OSError as exc:
        raise StateDirError(state_dir, exc.strerror or str(exc)) from None


def _open_file(folder: int, name: str) -> int | None:
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=folder)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        return None
    return fd


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _tail_of(fd: int, end: int, count: int) -> list[bytes]:
    """The last `count` lines of the first `end` bytes of `fd` (fewer if it has fewer)."""
    if count <= 0 or end <= 0:
        return []
    data = b""
    start = end
    while start > 0 and data.count(b"\n") <= count:
        block_start = max(0, start - BLOCK)
        data = os.pread(fd, start - block_start, block_start) + data
        start = block_start
    lines = data.splitlines(keepends=True)
    if start > 0 and lines:
        lines = lines[1:]  # cut by the block boundary
    return lines[-count:]


def known_names(state_dir: Path, configured: Collection[str]) -> set[str]:
    """The sidecars the config names, status.json lists, or the state dir has a folder for."""
    names = set(configured)
    try:
        with StateDir.open(state_dir, create=False) as state:
            doc = state.read(STATUS_NAME)
            entries = doc.get("sidecars") if doc is not None else None
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    names.add(entry["name"])
            for entry in os.listdir(state.fd):
                if NAME_RE.fullmatch(entry) and _is_folder(state.fd, entry):
                    names.add(entry)
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:
        raise StateDirError(state_dir, exc.strerror or str(exc)) from None
    return names


def _is_folder(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


class OutputReader:
    """One sidecar's output.log: `last(n)`, then `follow()` for what is written after."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.state_dir = state_dir
        self.name = name
        self._folder: int | None = None
        self._fd: int | None = None  # the file being followed
        self._identity: tuple[int, int] | None = None
        self._offset = 0

    @classmethod
    def open(
        cls,
        state_dir: Path,
        name: str,
        configured: Collection[SidecarConfig],
    ) -> OutputReader:
        """A reader for `name`; UnknownSidecarError / OutputDisabledError (exit 2) if none."""
        sidecar = next((s for s in configured if s.name == name), None)
        if sidecar is not None and not sidecar.output.file:
            raise OutputDisabledError(name)
        if sidecar is None:
            known = known_names(state_dir, [s.name for s in configured])
            if not NAME_RE.fullmatch(name) or name not in known:
                raise UnknownSidecarError(name, state_dir, known)
        return cls(state_dir, name)

    def _ensure_folder(self) -> int | None:
        if self._folder is None:
            self._folder = _open_folder(self.state_dir, self.name)
        return self._folder

    def last(self, count: int) -> list[bytes]:
        """The last `count` lines (from rotated files too); following starts after them."""
        folder = self._ensure_folder()
        if folder is None:
            return []
        self._fd = _open_file(folder, OUTPUT_NAME)
        lines: list[bytes] = []
        if self._fd is not None:
            info = os.fstat(self._fd)
            self._identity = _identity(info)
            self._offset = info.st_size
            lines = _tail_of(self._fd, info.st_size, count)
        for n in range(1, MAX_BACKUPS + 1):
            if len(lines) >= count:
                break
            older = _open_file(folder, f"{OUTPUT_NAME}.{n}")
            if older is None:
                break
            try:
                size = os.fstat(older).st_size
                lines = _tail_of(older, size, count - len(lines)) + lines
            finally:
                os.close(older)
        return lines

    def follow(self) -> bytes:
        """What was written since the last call (b"" if nothing yet)."""
        folder = self._ensure_folder()
        if folder is None:
            return b""
        if self._fd is None:
            self._fd = _open_file(folder, OUTPUT_NAME)
            if self._fd is None:
                return b""
            self._identity = _identity(os.fstat(self._fd))
            self._offset = 0
        data = self._read_on()
        try:
            current = _identity(os.stat(OUTPUT_NAME, dir_fd=folder, follow_symlinks=False))
        except OSError:
            return data  # between a rotation's rename and the new file: next time
        if current != self._identity:
            return data + self._rotated(folder)
        if os.fstat(self._fd).st_size < self._offset:  # truncated in place
            self._offset = 0
            return data + self._read_on()
        return data

    def _read_on(self) -> bytes:
        if self._fd is None:
            return b""
        chunks = []
        while chunk := os.pread(self._fd, BLOCK, self._offset):
            chunks.append(chunk)
            self._offset += len(chunk)
        return b"".join(chunks)

    def _rotated(self, folder: int) -> bytes:
        """output.log is a new file: the rest of ours, the files in between, then the new one."""
        data = [self._read_on()]  # lines written just before the rename
        missed: list[str] = []
        for n in range(1, MAX_BACKUPS + 1):
            backup = f"{OUTPUT_NAME}.{n}"
            try:
                info = os.stat(backup, dir_fd=folder, follow_symlinks=False)
            except OSError:
                missed = []  # ours is gone (backups = 0, or rotated out): nothing to add
                break
            if _identity(info) == self._identity:
                break
            missed.append(backup)
        for backup in reversed(missed):  # oldest first
            fd = _open_file(folder, backup)
            if fd is not None:
                try:
                    data.append(_read_all(fd))
                finally:
                    os.close(fd)
        self._close_file()
        data.append(self.follow())
        return b"".join(data)

    def _close_file(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._identity = None
            self._offset = 0

    def close(self) -> None:
        self._close_file()
        if self._folder is not None:
            os.close(self._folder)
            self._folder = None


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, BLOCK, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
