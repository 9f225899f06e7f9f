"""A child's output: its stdout/stderr pipes drained line by line (lines capped at 8 KiB).

The pipes are always drained, so a chatty child never blocks on a full pipe for long. A chunk of
output is handled in slices of at most SLICE_S of the event loop's time (a `yes` flood is 32768
lines a chunk), and output handling as a whole gets at most OUTPUT_SHARE of the loop's time
beyond a burst: a flood from one sidecar must not hold up the supervision of the others, nor
take the CPU their restarts need. A child writing faster than that waits on its full pipe, as
it does while the sidecar's output.log writer is behind but moving (`Drain`): a chatty child is
slowed to what the disk takes rather than losing lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.lowlevel

LINE_CAP = 8192
READ_CHUNK = 65536
SLICE_S = 0.002  # the longest run of sink calls between two turns of the event loop
SLICE_CHECK = 32  # lines between two looks at the clock
# Output handling of all sidecars together gets at most half of the loop's time beyond a burst
# of 0.1 s. With the slices alone a `yes` flood still doubled a neighbour's respawn (the daemon
# took a whole core); see `python -m bench output` and docs/benchmarks.md.
OUTPUT_SHARE = 0.5
OUTPUT_BURST_S = 0.1


class Budget:
    """Output handling, of every sidecar together, may take at most `share` of the event loop's
    time (beyond a burst of `burst_s`): a flood is read as fast as that allows, and the flooding
    child waits on its full pipe meanwhile, as it would for any reader slower than itself."""

    def __init__(self, share: float, burst_s: float) -> None:
        self.share = share
        self.burst_s = burst_s
        self._tokens = burst_s
        self._at = time.monotonic()

    def charge(self, busy_s: float) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst_s, self._tokens + (now - self._at) * self.share) - busy_s
        self._at = now

    async def pause(self, busy_s: float) -> None:
        """Charge `busy_s`, then give the loop a turn: a real pause once the budget is spent."""
        self.charge(busy_s)
        if self._tokens < 0 and self.share < 1.0:
            await anyio.sleep(-self._tokens / self.share)
        else:
            await anyio.lowlevel.checkpoint()


BUDGET = Budget(OUTPUT_SHARE, OUTPUT_BURST_S)

Sink = Callable[[str, str, bool], None]  # (stream, line, truncated)


class Drain(Protocol):
    """Where the lines go, when it can fall behind (outputlog.OutputLog): while it is
    `congested`, the pipe is not read (`drain` returns once there is room again)."""

    def congested(self) -> bool: ...

    async def drain(self) -> None: ...


async def forward_lines(fd: int, stream_name: str, sink: Sink, drain: Drain | None = None) -> None:
    """Read `fd` until EOF, calling sink(stream, line, truncated) per line."""
    pending = bytearray()
    discarding = False
    while True:
        if drain is not None and drain.congested():
            await drain.drain()
        await anyio.wait_readable(fd)
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            break
        pending += data
        sliced = time.monotonic()
        lines = 0
        while True:
            lines += 1
            if lines % SLICE_CHECK == 0 and (busy := time.monotonic() - sliced) > SLICE_S:
                await BUDGET.pause(busy)  # let the rest of the daemon have its turn
                sliced = time.monotonic()
            if drain is not None and drain.congested():  # a look at two ints: every line
                BUDGET.charge(time.monotonic() - sliced)
                await drain.drain()
                sliced = time.monotonic()
            newline = pending.find(b"\n")
            if newline < 0:
                if len(pending) > LINE_CAP:
                    if not discarding:
                        sink(stream_name, _decode(pending[:LINE_CAP]), True)
                    discarding = True
                    pending.clear()
                break
            line = bytes(pending[:newline])
            del pending[: newline + 1]
            if discarding:
                discarding = False
                continue
            if len(line) > LINE_CAP:
                sink(stream_name, _decode(line[:LINE_CAP]), True)
            else:
                sink(stream_name, _decode(line), False)
        BUDGET.charge(time.monotonic() - sliced)
    if pending and not discarding:
        sink(stream_name, _decode(pending[:LINE_CAP]), len(pending) > LINE_CAP)


def forward_all(
    streams: list[tuple[int, str]],
    sink: Sink,
    group: anyio.abc.TaskGroup,
    drain: Drain | None = None,
) -> anyio.Event:
    """Forward each (fd, name) in `group`; the event is set once all of them reached EOF."""
    drained = anyio.Event()
    remaining = len(streams)
    if not remaining:
        drained.set()

    async def forward(fd: int, name: str) -> None:
        nonlocal remaining
        try:
            await forward_lines(fd, name, sink, drain)
        finally:
            remaining -= 1
            if remaining == 0:
                drained.set()

    for fd, name in streams:
        group.start_soon(forward, fd, name)
    return drained


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace").rstrip("\r")
