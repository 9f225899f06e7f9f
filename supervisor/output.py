"""A child's output: its stdout/stderr pipes drained line by line (lines capped at 8 KiB).

The pipes are always drained, so a chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio

LINE_CAP = 8192
READ_CHUNK = 65536

Sink = Callable[[str, str, bool], None]  # (stream, line, truncated)


async def forward_lines(fd: int, stream_name: str, sink: Sink) -> None:
    """Read `fd` until EOF, calling sink(stream, line, truncated) per line."""
    pending = bytearray()
    discarding = False
    while True:
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
        while True:
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
    if pending and not discarding:
        sink(stream_name, _decode(pending[:LINE_CAP]), len(pending) > LINE_CAP)


def forward_all(
    streams: list[tuple[int, str]], sink: Sink, group: anyio.abc.TaskGroup
) -> anyio.Event:
    """Forward each (fd, name) in `group`; the event is set once all of them reached EOF."""
    drained = anyio.Event()
    remaining = len(streams)
    if not remaining:
        drained.set()

    async def forward(fd: int, name: str) -> None:
        nonlocal remaining
        try:
            await forward_lines(fd, name, sink)
        finally:
            remaining -= 1
            if remaining == 0:
                drained.set()

    for fd, name in streams:
        group.start_soon(forward, fd, name)
    return drained


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace").rstrip("\r")
