"""`supervisor logs`: read a sidecar's output.log - its last lines, then follow it across rotation.

Every file is opened through the state dir's fd without following a symlink, like the daemon
writes them. The last lines continue into `output.log.1`, `.2`, ... when output.log has fewer.

Following (`Follower`) tracks files by identity (device, inode), never by name: each poll lists
`output.log` and its backups, opens every file newer than the one being read (an open file can
be read to its end even once it is rotated out and deleted), and reads them in order, each to
its end. Lines can still go unread: files written and rotated out between two polls (a reader
that was stopped, a writer far faster than the poll). Those are never skipped silently: the
writer stamps each file with the number of lines before it (rotating.FIRST_LINE_XATTR), so the
follower knows how many it missed and says so (`Lost`). A file that shrank (truncated) is read
again from its start.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import NAME_RE, SidecarConfig
from supervisor.config.parse import MAX_BACKUPS  # no more rotated files than this to look at
from supervisor.errors import EXIT_USAGE, StateDirError, SupervisorError
from supervisor.sidecar.outputlog import OUTPUT_NAME
from supervisor.system.rotating import FIRST_LINE_XATTR
from supervisor.system.statedir import STATUS_NAME, RecordError, StateDir

POLL_S = 0.1  # when nothing came; right after data came, BUSY_POLL_S (a writer is busy)
BUSY_POLL_S = 0.005
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


@dataclass(frozen=True)
class Lost:
    """Lines that rotated away before they could be read: `lines` of them (None: unknown)."""

    lines: int | None

    def marker(self, name: str) -> bytes:
        count = f"{self.lines} lines" if self.lines is not None else "lines"
        return f"-- supervisor: {count} of {name}'s output rotated away unread here --\n".encode()


Item = bytes | Lost  # what a Follower yields: data, in order, and where lines went missing


class _Open:
    """One file being followed: its fd, identity, how far it was read and its line count."""

    def __init__(self, fd: int, identity: tuple[int, int]) -> None:
        self.fd = fd
        self.identity = identity
        self.offset = 0
        self.lines = 0  # newlines read so far (from `offset` 0)
        self.first_line = _first_line(fd)

    def read_on(self) -> bytes:
        chunks = []
        while chunk := os.pread(self.fd, BLOCK, self.offset):
            chunks.append(chunk)
            self.offset += len(chunk)
            self.lines += chunk.count(b"\n")
        return b"".join(chunks)

    def skip_to(self, offset: int) -> None:
        """Start after the first `offset` bytes (lines counted, not returned)."""
        self.offset = 0
        self.lines = 0
        while self.offset < offset and (
            chunk := os.pread(self.fd, min(BLOCK, offset - self.offset), self.offset)
        ):
            self.offset += len(chunk)
            self.lines += chunk.count(b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _first_line(fd: int) -> int | None:
    try:
        return int(os.getxattr(fd, FIRST_LINE_XATTR))
    except (OSError, ValueError):
        return None


class Follower:
    """Follows `name` and its rotated backups in the folder `folder` (an fd it does not own).

    `poll()` returns what was written since the last poll as Items: data in order, and a `Lost`
    wherever lines rotated away unread. Reusable for any file rotated by rotating.RotatingFile.
    """

    def __init__(self, folder: int, name: str = OUTPUT_NAME) -> None:
        self.folder = folder
        self.name = name
        self._files: list[_Open] = []  # oldest first: [0] is being read, the rest wait
        self._from_first_line = False  # nothing was there: every line the writer writes

    def start_at_end(self) -> None:
        """Follow from the current end of `name` (what `last` showed is not repeated)."""
        self.close()
        opened = self._open(self.name)
        if opened is not None:
            opened.skip_to(os.fstat(opened.fd).st_size)
            self._files.append(opened)
        else:
            self._from_first_line = True

    def poll(self) -> list[Item]:
        items: list[Item] = []
        if not self._files and not self._first_files(items):
            return []
        self._discover()
        while True:
            current = self._files[0]
            if os.fstat(current.fd).st_size < current.offset:  # truncated in place
                current.offset = current.lines = 0
            data = current.read_on()
            if data:
                items.append(data)
            if len(self._files) == 1:
                return items
            # A newer file exists: this one is final (the writer rotated it before that one).
            data = current.read_on()
            if data:
                items.append(data)
            nxt = self._files[1]
            lost = _lost_between(current, nxt)
            if lost is not None:
                items.append(lost)
            current.close()
            self._files.pop(0)

    def _first_files(self, items: list[Item]) -> bool:
        """The first file(s) to appear: `name`; or, when nothing was there at the start, every
        file from the oldest backup on, and the lines that rotated away before (Lost)."""
        if not self._from_first_line:
            opened = self._open(self.name)
            if opened is not None:
                self._files.append(opened)
            return bool(self._files)
        self._discover()
        if self._files:
            self._from_first_line = False
            first = self._files[0].first_line
            if first:
                items.append(Lost(first))
        return bool(self._files)

    def _discover(self) -> None:
        """Open every file newer than those followed, oldest first (by identity)."""
        known = {f.identity for f in self._files}
        newer: list[tuple[int, int]] = []
        names = [self.name] + [f"{self.name}.{n}" for n in range(1, MAX_BACKUPS + 1)]
        listing = []
        for name in names:
            try:
                info = os.stat(name, dir_fd=self.folder, follow_symlinks=False)
            except OSError:
                if name != self.name:
                    break
                continue  # between a rotation's rename and the new file
            listing.append((name, _identity(info)))
        for _name, identity in listing:  # newest first
            if identity in known:
                break
            newer.append(identity)
        for name, identity in reversed(listing):
            if identity not in newer:
                continue
            opened = self._open(name)
            if opened is not None and opened.identity == identity:
                self._files.append(opened)
            elif opened is not None:  # rotated on meanwhile: next poll finds it
                opened.close()
                break

    def _open(self, name: str) -> _Open | None:
        fd = _open_file(self.folder, name)
        if fd is None:
            return None
        return _Open(fd, _identity(os.fstat(fd)))

    def close(self) -> None:
        for opened in self._files:
            opened.close()
        self._files = []


def _lost_between(done: _Open, nxt: _Open) -> Lost | None:
    """Lines the writer put between the end of `done` and the start of `nxt` (None if none)."""
    if done.first_line is None or nxt.first_line is None:
        return None  # not stamped (no xattrs here): nothing to count with
    missing = nxt.first_line - (done.first_line + done.lines)
    return Lost(missing) if missing > 0 else None


class OutputReader:
    """One sidecar's output.log: `last(n)`, then `follow()` for what is written after."""

    def __init__(self, state_dir: Path, name: str) -> None:
        self.state_dir = state_dir
        self.name = name
        self._folder: int | None = None
        self._follower: Follower | None = None

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
        self._follower = Follower(folder)
        self._follower.start_at_end()
        fd = _open_file(folder, OUTPUT_NAME)
        lines: list[bytes] = []
        if fd is not None:
            try:
                lines = _tail_of(fd, os.fstat(fd).st_size, count)
            finally:
                os.close(fd)
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
        """What was written since the last call (b"" if nothing yet), a marker line in place of
        lines that rotated away unread."""
        folder = self._ensure_folder()
        if folder is None:
            return b""
        if self._follower is None:
            self._follower = Follower(folder)
        return b"".join(
            item if isinstance(item, bytes) else item.marker(self.name)
            for item in self._follower.poll()
        )

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
            self._follower = None
        if self._folder is not None:
            os.close(self._folder)
            self._folder = None
