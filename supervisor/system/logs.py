"""structlog set-up: one event per line, JSON off a TTY, console on one; the bounded writer.

Logging can never block the event loop or raise into supervision: a log call renders the line
and either writes it at once with a write that cannot wait (`_NoWait`: stderr is a pipe or a
socket with room, and nothing is queued) or appends it to a bounded buffer, whose writer thread
owns the slow, fallible part (the write(2) to stderr). The first spares the thread a wake-up per
line: in a crash storm, a tenth of the daemon's CPU went to those. stderr that is closed, full,
never read, or failing (EPIPE, EIO, ENOSPC) costs log lines, which are counted and reported as
`log_lines_dropped` once a write works again (and at shutdown) — never a stall or an exception
where the daemon supervises.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import select
import shutil
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TextIO

import structlog

from supervisor.config import LogFormat, LogLevel
from supervisor.core import console

if TYPE_CHECKING:
    from supervisor.system.logfile import LogFile

_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}

MAX_BUFFERED_BYTES = 4 << 20  # a burst of child output fits; a dead stderr cannot grow memory
# Child output may fill only this share of the buffer: under a flood the daemon's own events
# (a status dump, a restart, a stop) still find room; the flood's lines are dropped first.
CHILD_OUTPUT_SHARE = 0.5
CHILD_OUTPUT = "child-output"  # the logger name of child_output events (see `get_output`)
FLUSH_TIMEOUT_S = 1.0  # at exit: what stderr gets to take the last lines


class LineWriter:
    """A file descriptor behind a bounded buffer and a writer thread (the TextIO structlog uses).

    `write` never blocks on the fd and never raises: when the buffer is full the line is dropped
    and counted. The thread writes what is queued (whole lines, or the rest of one a socket took
    part of); a failed write drops what it held.
    """

    def __init__(self, fd: int, max_bytes: int = MAX_BUFFERED_BYTES) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        self.dropped = 0  # lines lost since the last `log_lines_dropped` report
        self.dropped_total = 0
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        self._busy = False  # the thread holds lines it took from the buffer
        self._paused = False  # a question is open on the terminal: hold lines (see `paused`)
        self._cond = threading.Condition()
        self._now = _NoWait.open(fd)
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    # -- the TextIO face structlog writes to ------------------------------------------------

    def write(self, text: str, *, limit: int | None = None) -> int:
        data = text.encode("utf-8", "replace")
        with self._cond:
            if self._pending_bytes + len(data) > (self.max_bytes if limit is None else limit):
                self._drop(1)
                return len(text)
            if self._idle() and self._now is not None:
                try:
                    written = self._now.write(data)
                except OSError:  # EPIPE, EIO...: lost, as the thread would have lost it
                    self._drop(1)
                    return len(text)
                data = data[written:]
                if not data:
                    return len(text)
            self._pending.append(data)
            self._pending_bytes += len(data)
            self._cond.notify()
        return len(text)

    def _idle(self) -> bool:
        """Nothing queued, held or unreported: a line written now keeps every line's order."""
        return not (self._pending or self._busy or self._paused or self.dropped)

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it can (see `drain` for exit)."""

    def isatty(self) -> bool:
        try:
            return os.isatty(self.fd)
        except OSError:
            return False

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending or self._paused:
                    self._busy = False
                    self._cond.notify_all()  # drain() waits for an idle writer
                    self._cond.wait()
                self._busy = True
                batch = list(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
            self._write_batch(batch)

    def _write_batch(self, batch: list[bytes]) -> None:
        for index, line in enumerate(batch):
            if not self._write_line(line):
                with self._cond:
                    self._drop(len(batch) - index)
                return
        with self._cond:
            recovered, self.dropped = self.dropped, 0
        if recovered:
            # Output works again: say what it cost, through the normal path (it is buffered
            # like any line, and counted again if it cannot be written either).
            get().warning("log_lines_dropped", count=recovered, total=self.dropped_total)

    def _write_line(self, line: bytes) -> bool:
        view = memoryview(line)
        while view:
            try:
                written = os.write(self.fd, view)
            except InterruptedError:
                continue
            except BlockingIOError:
                # A non-blocking stderr that is full: wait for room here, in this thread.
                time.sleep(0.01)
                continue
            except OSError:  # EPIPE, EIO, ENOSPC, EBADF: this line is lost
                return False
            view = view[written:]
        return True

    def _drop(self, count: int) -> None:
        self.dropped += count
        self.dropped_total += count

    @contextlib.contextmanager
    def paused(self, timeout_s: float = FLUSH_TIMEOUT_S) -> Iterator[None]:
        """Hold every line (buffered, bounded as ever) while a question is open on the terminal,
        so nothing is written over or after it; lines already taken are written first (bounded)."""
        with self._cond:
            deadline = time.monotonic() + timeout_s
            while (self._pending or self._busy) and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)  # what was said before the question comes before it
            self._paused = True
            while self._busy and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
        try:
            yield
        finally:
            with self._cond:
                self._paused = False
                self._cond.notify_all()

    # -- exit ---------------------------------------------------------------------------------

    def drain(self, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait (bounded) until every buffered line was written or dropped; True if it was."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._pending and not self._paused) or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def report_dropped(self) -> None:
        """At shutdown: report lines lost in a failure streak that never ended."""
        with self._cond:
            count, self.dropped = self.dropped, 0
        if count:
            get().warning("log_lines_dropped", count=count, total=self.dropped_total)


class _NoWait:
    """Writes to stderr that return at once, whatever its reader does, for the caller's thread.

    A pipe is reopened through /proc with O_NONBLOCK (a description of our own: the flags of the
    stderr others share stay as they are), and a line of at most PIPE_BUF bytes is written whole
    or not at all (POSIX). A socket is sent to with MSG_DONTWAIT (a stream socket may take part
    of a line). Anything else (a terminal, a file) has none: its writes go through the thread.
    """

    def __init__(self, fd: int, sock: socket.socket | None) -> None:
        self.fd = fd
        self.sock = sock

    @classmethod
    def open(cls, fd: int) -> _NoWait | None:
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISFIFO(mode):
                flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                return cls(os.open(f"/proc/self/fd/{fd}", flags), None)
            # A default socket timeout would make the shared description non-blocking.
            if stat.S_ISSOCK(mode) and socket.getdefaulttimeout() is None:
                dup = os.dup(fd)
                try:
                    return cls(dup, socket.socket(fileno=dup))
                except OSError:
                    os.close(dup)
                    raise
        except OSError:  # no /proc, not reopenable (another user's pipe): the thread only
            return None
        return None

    def write(self, data: bytes) -> int:
        """Bytes written (0: it would wait); raises OSError for a failed write."""
        try:
            if self.sock is not None:
                return self.sock.send(data, socket.MSG_DONTWAIT)
            if len(data) > select.PIPE_BUF:
                return 0
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            return 0


@functools.cache
def writer() -> LineWriter:
    """The process's stderr writer (made on first use; one thread for the process's life)."""
    return LineWriter(sys.stderr.fileno() if _has_stderr() else 2)


def _has_stderr() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.fileno() >= 0
    except (OSError, ValueError, AttributeError):
        return False


class _Lower:
    """A LineWriter seen as a TextIO whose lines take at most a share of the buffer."""

    def __init__(self, out: LineWriter) -> None:
        self._out = out
        self._limit = int(out.max_bytes * CHILD_OUTPUT_SHARE)

    def write(self, text: str) -> int:
        return self._out.write(text, limit=self._limit)

    def flush(self) -> None:
        pass


class _Factory:
    """structlog's logger factory: WriteLoggers on our writer; child output on its share."""

    def __init__(self, out: TextIO | LineWriter) -> None:
        self._out = out
        lower = _Lower(out) if isinstance(out, LineWriter) else out
        self._loggers = {
            False: structlog.WriteLogger(file=out),  # type: ignore[arg-type]
            True: structlog.WriteLogger(file=lower),  # type: ignore[arg-type]
        }

    def __call__(self, *args: object) -> structlog.WriteLogger:
        return self._loggers[bool(args) and args[0] == CHILD_OUTPUT]


def uses_json(log_format: LogFormat, stream: TextIO | LineWriter) -> bool:
    match log_format:
        case LogFormat.JSON:
            return True
        case LogFormat.CONSOLE:
            return False
        case LogFormat.AUTO:
            try:
                return not stream.isatty()
            except (AttributeError, ValueError, OSError):
                return True


def use_colors(stream: TextIO | LineWriter, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour in console logs: NO_COLOR (https://no-color.org) turns it off, FORCE_COLOR on,
    TERM=dumb off; otherwise only on a TTY. Non-empty values count, as no-color.org says."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return console.colour_wanted(tty, environ)


class ConsoleLines:
    """structlog's last processor on a terminal: console.render, plus the first-launch summary.

    Kept across a reconfigure (a reload) so that the summary is said once per run.
    """

    _summary: console.Summary | None = None

    def __init__(self, *, colours: bool, debug: bool) -> None:
        self.colours = colours
        self.debug = debug
        if ConsoleLines._summary is None:
            ConsoleLines._summary = console.Summary()
        self.summary = ConsoleLines._summary
        self.names: list[str] = []

    def __call__(self, _logger: object, _name: str, event: structlog.types.EventDict) -> str:
        if not console.shown(event, debug=self.debug):
            raise structlog.DropEvent
        if event.get("event") == "daemon_started" and isinstance(event.get("sidecars"), list):
            self.names = [str(n) for n in event["sidecars"]]
        width = shutil.get_terminal_size((console.MAX_WIDTH, 24)).columns
        line = console.render(event, colours=self.colours, width=width, names=self.names)
        stamp = str(event.get("timestamp") or "")[:8]
        extra = self.summary.feed(event)
        if self.colours and extra:
            extra = [f"\x1b[1m{extra[0]}\x1b[0m", *extra[1:]]
        return "\n".join([line, *(f"{stamp}  {text}" for text in extra)])


def hold_console() -> contextlib.AbstractContextManager[None]:
    """Hold the stderr log lines while a question is open on the terminal (consent)."""
    if writer.cache_info().currsize == 0:
        return contextlib.nullcontext()
    return writer().paused()


def configure(
    log_format: LogFormat = LogFormat.AUTO,
    level: LogLevel = LogLevel.INFO,
    stream: TextIO | None = None,
    log_file: LogFile | None = None,
) -> None:
    """Configure structlog globally; safe to call again (a reload may change the level).

    Without `stream`, lines go to stderr through the bounded writer; with `log_file`, to that
    rotated file instead (its own bounded, counting writer), always as JSON lines.
    """
    out: TextIO | LineWriter = (
        log_file.stream if log_file is not None else stream if stream is not None else writer()
    )
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if log_file is not None or uses_json(log_format, out):
        processors += [
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        # A person at a terminal: local time to the second, one short line (console.py).
        processors += [
            structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
            structlog.processors.format_exc_info,
            ConsoleLines(colours=use_colors(out), debug=level is LogLevel.DEBUG),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_Factory(out),
        cache_logger_on_first_use=False,
    )


def finish(timeout_s: float = FLUSH_TIMEOUT_S) -> None:
    """Before the process exits: report lost lines, then give the writer a bounded moment."""
    if writer.cache_info().currsize == 0:
        return  # nothing was ever logged through it
    with contextlib.suppress(Exception):
        writer().report_dropped()
    writer().drain(timeout_s)


def get(**bound: object) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()
    return logger.bind(**bound) if bound else logger


def get_output(**bound: object) -> structlog.typing.FilteringBoundLogger:
    """The logger for `child_output` events: first to be dropped when the buffer fills."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(CHILD_OUTPUT)
    return logger.bind(**bound) if bound else logger
