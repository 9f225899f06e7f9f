"""`[supervisor] log_file` (or `--log-file`): the daemon's own log as JSON lines, rotated.

The file lives in a folder opened once; it is written and rotated through that folder's fd
without following a symlink, by a `rotating.LineWriter` thread, so a slow or full disk costs log
lines (counted; the file then says `log_lines_dropped` with the count) and never supervision.
structlog writes to `LogFile.stream`, a text stream whose writes only queue lines.
"""

from __future__ import annotations

import datetime
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from supervisor.errors import EXIT_USAGE, SupervisorError
from supervisor.system.rotating import LineWriter, RotatingFile
from supervisor.system.statedir import DIR_MODE

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CLOSE_TIMEOUT_S = 2.0  # at daemon exit: the last lines, unless the disk is stuck


class LogFileError(SupervisorError):
    """The log file cannot be created or opened."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"cannot write the log file {path}: {reason}; "
            "fix its folder, or change supervisor.log_file / --log-file"
        )


class _Lines(io.RawIOBase):
    """The bytes of a text stream, cut into lines for a LineWriter (never blocks)."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer
        self._partial = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        chunk = bytes(data)
        self._partial += chunk
        while (end := self._partial.find(b"\n")) >= 0:
            self._writer.put(bytes(self._partial[: end + 1]))
            del self._partial[: end + 1]
        return len(chunk)


def _dropped_event(count: int, error: str | None) -> bytes:
    stamp = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    event = {
        "count": count,
        "reason": f"writing failed: {error}" if error else "the writer fell behind",
        "event": "log_lines_dropped",
        "level": "warning",
        "timestamp": stamp,
    }
    return (json.dumps(event) + "\n").encode()


class LogFile:
    def __init__(self, path: Path, writer: LineWriter) -> None:
        self.path = path
        self._writer = writer
        # structlog flushes after every event: that hands its line to the writer.
        self.stream: TextIO = io.TextIOWrapper(
            io.BufferedWriter(_Lines(writer)),
            encoding="utf-8",
            errors="backslashreplace",
            newline="\n",
            write_through=True,
        )

    @classmethod
    def open(cls, path: Path, *, max_bytes: int, backups: int) -> LogFile:
        """Create its folder (0700) if need be and open the file now, so that a problem is a
        clear error at start-up (LogFileError) rather than lost lines."""
        folder = path.parent
        try:
            os.makedirs(folder, mode=DIR_MODE, exist_ok=True)
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise LogFileError(path, exc.strerror or str(exc)) from None
        try:
            file = RotatingFile(dir_fd, path.name, max_bytes=max_bytes, backups=backups)
        finally:
            os.close(dir_fd)
        try:
            file.open()
        except OSError as exc:
            file.close()
            raise LogFileError(path, exc.strerror or str(exc)) from None
        return cls(path, LineWriter(file, gap_line=_dropped_event, thread_name="log-file"))

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued (bounded by `timeout_s`) and close the file. Blocks."""
        self._writer.close(timeout_s)
