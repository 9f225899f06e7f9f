"""A size-rotated log file reached only through a directory fd, and a thread that writes it.

`RotatingFile` appends whole lines to `name` inside an open directory, never following a symlink
(`O_NOFOLLOW`, `renameat`, `unlinkat`: a link planted at `name` or at a backup is refused or
replaced, never written through), and rotates before a line that would take the file past
`max_bytes`: `name` -> `name.1` -> ... -> `name.N`. It blocks like any file I/O, so callers that
must not block use `LineWriter`: `put` only appends to a bounded in-memory queue (a full queue
drops the line and counts it), and a thread of its own does the writing. A failing disk (ENOSPC,
EIO) costs lines, counted, never the caller; once writing works again the file gets one line
saying how many were lost (`gap_line`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence

FILE_MODE = 0o600
DEFAULT_MAX_PENDING_BYTES = 1 << 20
COALESCE_S = 0.002

# Read too: whether the file ends mid-line (see `_torn`) is read back at open.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# Each file is stamped with the number of lines written before its first one (an extended
# attribute; nothing where the file system has none), so that a follower (tail.Follower) that
# finds a file gone unread can say exactly how many lines it missed.
FIRST_LINE_XATTR = "user.supervisor.first_line"

GapLine = Callable[[int, str | None], bytes]  # (lines lost, the write error if any) -> a line


class PartialWrite(OSError):
    """Writing failed after `written` of the lines given (a torn last line is not counted)."""

    def __init__(self, written: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror)
        self.written = written
        self.error = error


class RotatingFile:
    """`name` in the directory `dir_fd`, appended line by line and rotated by size.

    The directory fd is duplicated (the caller keeps and closes its own). Not thread-safe: one
    writer (a `LineWriter` thread) at a time.
    """

    def __init__(self, dir_fd: int, name: str, *, max_bytes: int, backups: int) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        if max_bytes < 1 or backups < 0:
            raise ValueError(f"bad limits: max_bytes={max_bytes}, backups={backups}")
        self.name = name
        self.max_bytes = max_bytes
        self.backups = backups
        self._dir_fd: int | None = os.dup(dir_fd)
        self._fd: int | None = None
        self._size = 0
        self._torn = False  # the file ends in a line cut short by a failed write
        self._lines = 0  # lines written into every file so far, the first one's stamp included

    def backup_name(self, n: int) -> str:
        return f"{self.name}.{n}"

    def open(self) -> None:
        """Open (create, 0600) `name` for appending, if not open yet; raises OSError."""
        if self._fd is not None:
            return
        if self._dir_fd is None:
            raise ValueError(f"{self.name} is closed")
        try:
            fd = os.open(self.name, _OPEN_FLAGS, FILE_MODE, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OSError(errno.ELOOP, f"{self.name} is a symbolic link; refusing it") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(errno.EINVAL, f"{self.name} is not a regular file; refusing it")
            if stat.S_IMODE(info.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._size = info.st_size
        # A line cut short before (a full disk, a crash) is ended before ours.
        self._torn = info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n"
        self._stamp(fd, info.st_size)

    def _stamp(self, fd: int, size: int) -> None:
        """A new file gets FIRST_LINE_XATTR = lines so far; one found (an earlier daemon's)
        keeps its own, and the count goes on after the lines it holds."""
        with contextlib.suppress(OSError):
            if size == 0:
                os.setxattr(fd, FIRST_LINE_XATTR, str(self._lines).encode())
                return
            first = int(os.getxattr(fd, FIRST_LINE_XATTR))
            self._lines = first + _count_lines(fd, size)

    def append(self, lines: Sequence[bytes]) -> None:
        """Append `lines` (each ends with a newline), rotating between lines as needed.

        A line never starts past `max_bytes`, so the file stays within `max_bytes` plus at most
        one line (a single line longer than `max_bytes` gets a file of its own). Raises
        PartialWrite when a write or a rotation fails.
        """
        written = 0
        rotated = False
        try:
            self._reopen_if_removed()
            self.open()
            while written < len(lines):
                # Right after a rotation one line always goes in, so this always progresses.
                chunk, end = self._fitting(lines, written, at_least_one=rotated)
                if not chunk:
                    self._rotate()
                    rotated = True
                    continue
                done, error = self._write(chunk)
                if error is not None:
                    raise PartialWrite(written + _whole_lines(lines[written:end], done), error)
                written = end
                rotated = False
        except PartialWrite:
            raise
        except OSError as exc:
            raise PartialWrite(written, exc) from None

    def _fitting(
        self, lines: Sequence[bytes], start: int, *, at_least_one: bool
    ) -> tuple[bytes, int]:
        """The lines from `start` that still fit (at least one into an empty file)."""
        room = self.max_bytes - self._size
        end = start
        total = 0
        while end < len(lines):
            size = len(lines[end])
            if total + size > room and (total or (self._size and not at_least_one)):
                break
            total += size
            end += 1
        return b"".join(lines[start:end]), end

    def _write(self, data: bytes) -> tuple[int, OSError | None]:
        """Write `data`: (bytes of it written, the error that stopped it or None)."""
        fd = self._fd
        if fd is None:
            return 0, OSError(errno.EBADF, f"{self.name} is not open")
        # The last write stopped mid-line (a full disk): end that line before the next one.
        prefix = b"\n" if self._torn else b""
        payload = memoryview(prefix + data)
        done = 0
        try:
            while done < len(payload):
                count = os.write(fd, payload[done:])
                self._lines += payload[done : done + count].tobytes().count(b"\n")
                done += count
                self._size += count
        except OSError as exc:
            if done:
                self._torn = payload[done - 1] != ord("\n")
            return max(0, done - len(prefix)), exc
        self._torn = False
        return len(data), None

    def _reopen_if_removed(self) -> None:
        # Someone deleted the file (to free space, say): writing on into the unlinked inode would
        # fill the disk invisibly.
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self._close_file()

    def _rotate(self) -> None:
        self._close_file()
        dir_fd = self._dir_fd
        if dir_fd is None:
            raise OSError(errno.EBADF, f"{self.name} is closed")
        if self.backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=dir_fd)
        else:
            # rename() moves a symlink itself, never its target; the oldest backup is replaced.
            for n in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(
                        self.backup_name(n),
                        self.backup_name(n + 1),
                        src_dir_fd=dir_fd,
                        dst_dir_fd=dir_fd,
                    )
            with contextlib.suppress(FileNotFoundError):
                os.rename(self.name, self.backup_name(1), src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self.open()

    def _close_file(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._close_file()
        if self._dir_fd is not None:
            fd, self._dir_fd = self._dir_fd, None
            os.close(fd)


def _whole_lines(lines: Sequence[bytes], size: int) -> int:
    """How many of `lines` fit entirely into their first `size` bytes."""
    count = 0
    for line in lines:
        size -= len(line)
        if size < 0:
            break
        count += 1
    return count


class LineWriter:
    """Whole lines for a `RotatingFile`, written by a thread of its own; `put` never blocks.

    At most `max_pending_bytes` wait in memory (plus one batch being written); beyond that a
    line is dropped and counted, as are lines a failing write loses. `dropped` only grows; the
    caller reports it. Where lines went missing the file gets `gap_line(count, error)`, in
    place. The thread starts with the first line.
    """

    def __init__(
        self,
        file: RotatingFile,
        *,
        gap_line: GapLine | None = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        thread_name: str = "line-writer",
    ) -> None:
        self.file = file
        self._gap_line = gap_line
        self._max_pending = max_pending_bytes
        self._thread_name = thread_name
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the thread waits on it for lines
        self._flushed = threading.Condition(lock)  # `flush` waits on it for the thread
        self._queued = 0  # lines accepted by `put`; a line's number is the count before it
        self._handled = 0  # ... of which the thread has written or lost
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._waiting = False  # the thread sleeps on _cond and needs a notify
        self._closing = False
        self._thread: threading.Thread | None = None
        self._unmarked = 0  # lost and not yet marked by a gap line ...
        self._gap_at: int | None = None  # ... the first of them before accepted line number N
        self.dropped = 0
        self.error: str | None = None  # the last write error, until a write succeeds again

    def put(self, line: bytes) -> bool:
        """Queue one line (ending with a newline); False if it was dropped."""
        with self._cond:
            if (
                self._closing
                or self._pending_bytes + len(line) > self._max_pending
                or (self._thread is None and not self._start())
            ):
                self._lose(1, self._queued)
                return False
            self._pending.append(line)
            self._pending_bytes += len(line)
            self._queued += 1
            if self._waiting:
                self._cond.notify()
        return True

    def congested(self) -> bool:
        """More than three quarters of the queue is taken (read without the lock: a hint)."""
        return self._pending_bytes > self._max_pending * 3 // 4

    @property
    def progress(self) -> int:
        """Lines written or lost so far: it grows while the thread gets on with its work."""
        return self._handled

    def _start(self) -> bool:
        thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        try:
            thread.start()
        except RuntimeError:  # cannot start a thread (resource limits): lose lines, not the caller
            return False
        self._thread = thread
        return True

    def flush(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until every line put so far is written or counted lost.

        Blocks: call it from a worker thread."""
        with self._cond:
            target = self._queued
            return self._flushed.wait_for(lambda: self._handled >= target, timeout_s)

    def close(self, timeout_s: float) -> bool:
        """Write what is queued (waiting at most `timeout_s`), stop the thread, close the file.

        Blocks: call it from a worker thread. Returns False if the thread did not finish in time
        (it is a daemon thread; it closes the file itself when it does).
        """
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify()
        if thread is None:
            self.file.close()
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        self._waiting = True
                        self._cond.wait()
                    self._waiting = False
                if not self._closing:
                    # Woken by a line: let its neighbours join it. A batch a few ms long, not a
                    # wake-up, a GIL hand-over and a write per line of a chatty child.
                    time.sleep(COALESCE_S)
                with self._cond:
                    batch, self._pending = self._pending, []
                    self._pending_bytes = 0
                    first = self._handled
                    done = self._closing
                if batch or (done and self._unmarked):
                    self._write(batch, first, final=done)
                with self._cond:
                    self._handled += len(batch)
                    self._flushed.notify_all()
                if done:
                    return
        finally:
            self.file.close()

    def _write(self, batch: list[bytes], first: int, *, final: bool) -> None:
        """Append `batch` (lines number `first`...), with a gap line where lines went missing."""
        with self._cond:
            unmarked, gap_at = self._unmarked, self._gap_at
        lines = batch
        mark = None  # the gap line's index in `lines`
        if unmarked and self._gap_line is not None and gap_at is not None:
            cut = min(max(gap_at - first, 0), len(batch))
            if cut < len(batch) or final:  # else the gap is after this batch: a later one marks it
                mark = cut
                lines = [*batch[:cut], self._gap_line(unmarked, self.error), *batch[cut:]]
        try:
            self.file.append(lines)
            written = len(lines)
            failure = None
        except PartialWrite as exc:
            written = exc.written
            failure = exc
        if mark is not None and written > mark:
            with self._cond:
                self._unmarked -= unmarked
                if not self._unmarked:
                    self._gap_at = None
            written -= 1
        if failure is not None:
            self.error = failure.error.strerror or str(failure.error)
            with self._cond:
                self._lose(len(batch) - written, first + len(batch))
        else:
            self.error = None

    def _lose(self, count: int, before: int) -> None:
        """`count` lines are lost just before accepted line number `before` (lock held)."""
        self.dropped += count
        self._unmarked += count
        if self._gap_at is None or before < self._gap_at:
            self._gap_at = before


def _count_lines(fd: int, size: int) -> int:
    count = offset = 0
    while offset < size and (block := os.pread(fd, min(1 << 20, size - offset), offset)):
        count += block.count(b"\n")
        offset += len(block)
    return count
