"""`<state_dir>/<name>/output.log`: a sidecar's stdout/stderr lines, timestamped, rotated.

One per sidecar run (it spans restarts). Lines are formatted on the event loop (a cached
timestamp prefix, about a microsecond a line) and written by a `rotating.LineWriter` thread, so a
slow or full disk never holds up supervision. A writer that is behind but moving pushes back:
the sidecar's pipes are not read until its queue has room (`drain`), so the child waits on its
pipe, as it would for any slower reader, and no line is lost. A writer that does not move for
STALL_S (a hung disk) or fails (a full one) loses lines instead: they are counted and reported
as `output_lines_dropped`, and the file itself gets a line saying how many are missing.

A line reads `2026-01-01T12:00:00.123Z stdout <text>` (` [truncated]` appended to a line that
was cut at 8 KiB).
"""

from __future__ import annotations

import time

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import SidecarConfig
from supervisor.system import workers
from supervisor.system.rotating import LineWriter, RotatingFile
from supervisor.system.statedir import StateDir

OUTPUT_NAME = "output.log"
REPORT_EVERY_S = 1.0  # at most one output_lines_dropped per sidecar per second
CLOSE_TIMEOUT_S = 2.0  # flushing at the end of a run; a stuck disk must not hold up a stop
STALL_S = 0.5  # a writer that handles no line for this long is stuck: lines are dropped then
DRAIN_POLL_S = 0.002


class Stamper:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ` of now; the part up to the second is formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1000):03d}Z"


class OutputLog:
    def __init__(self, writer: LineWriter, path: str, log: FilteringBoundLogger) -> None:
        self._writer = writer
        self.path = path
        self._log = log
        self._stamp = Stamper()
        self._reported = 0
        self._reported_at = 0.0
        self._stuck = False  # the writer stopped moving: no more waiting for it until it has room

    @classmethod
    def open(
        cls, state: StateDir, config: SidecarConfig, log: FilteringBoundLogger
    ) -> OutputLog | None:
        """The sidecar's output log, or None when `output.file` is off or its folder unusable."""
        if not config.output.file:
            return None
        path = str(state.path / config.name / OUTPUT_NAME)
        stamp = Stamper()

        def gap_line(count: int, error: str | None) -> bytes:
            why = f"writing failed: {error}" if error else "the writer fell behind"
            return f"{stamp.now()} supervisor {count} lines missing here ({why})\n".encode()

        try:
            # The file itself is opened by the writer thread, with its first line.
            with state.subdir(config.name, create=True) as folder:
                file = RotatingFile(
                    folder.fd,
                    OUTPUT_NAME,
                    max_bytes=config.output.max_bytes,
                    backups=config.output.backups,
                )
        except OSError as exc:
            log.error("output_open_failed", path=path, error=exc.strerror or str(exc))
            return None
        writer = LineWriter(file, gap_line=gap_line, thread_name=f"output-{config.name}")
        return cls(writer, path, log)

    def write(self, stream: str, line: str, truncated: bool) -> None:
        """One line of the child's output (never blocks, never raises)."""
        suffix = " [truncated]\n" if truncated else "\n"
        text = f"{self._stamp.now()} {stream} {line}{suffix}"
        self._writer.put(text.encode("utf-8", "backslashreplace"))
        if self._writer.dropped != self._reported:
            self._report(final=False)

    def congested(self) -> bool:
        """The writer's queue is nearly full and the writer is not known to be stuck."""
        if not self._writer.congested():
            self._stuck = False
            return False
        return not self._stuck

    async def drain(self) -> None:
        """Wait while the writer is behind but moving (the caller stops reading the child's
        pipes meanwhile); give up once it has not moved for STALL_S: it is stuck."""
        progress, since = self._writer.progress, time.monotonic()
        while self._writer.congested():
            await anyio.sleep(DRAIN_POLL_S)
            now = time.monotonic()
            if self._writer.progress != progress:
                progress, since = self._writer.progress, now
            elif now - since > STALL_S:
                self._stuck = True
                return

    def _report(self, *, final: bool) -> None:
        now = time.monotonic()
        dropped = self._writer.dropped
        if dropped == self._reported or (not final and now - self._reported_at < REPORT_EVERY_S):
            return
        self._log.warning(
            "output_lines_dropped",
            path=self.path,
            count=dropped - self._reported,
            total=dropped,
            error=self._writer.error,
        )
        self._reported = dropped
        self._reported_at = now

    async def aclose(self) -> None:
        """Flush what is queued (bounded; off the loop), close the file, report lost lines."""
        with anyio.CancelScope(shield=True):
            # All sidecars close theirs at once at a reload or a stop: none waits for another.
            await workers.run_sync(self._writer.close, CLOSE_TIMEOUT_S, own_thread=True)
        self._report(final=True)
