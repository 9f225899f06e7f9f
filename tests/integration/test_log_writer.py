"""The bounded log writer on real pipes: it never blocks or raises, drops and counts instead."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest
import structlog

from supervisor.config import LogFormat, LogLevel
from supervisor.system import logs
from supervisor.system.logs import LineWriter


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):
            os.close(fd)


def in_thread(work: object, timeout_s: float = 10.0) -> None:
    """Run `work` in a thread; fail if it has not returned within `timeout_s` (it blocked)."""
    assert callable(work)
    done = threading.Thread(target=work, daemon=True)
    done.start()
    done.join(timeout_s)
    assert not done.is_alive(), "the call blocked"


def test_a_pipe_nobody_reads_never_blocks_the_caller(pipe: tuple[int, int]) -> None:
    _, write_fd = pipe
    writer = LineWriter(write_fd, max_bytes=64 * 1024)
    line = "x" * 199 + "\n"
    # 20 MB against a 64 KiB pipe and a 64 KiB buffer: without the buffer, write() would block.
    in_thread(lambda: [writer.write(line) for _ in range(100_000)])
    assert writer.dropped > 90_000


def test_lines_dropped_are_reported_once_output_works_again(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    writer = LineWriter(write_fd, max_bytes=64 * 1024)
    saved = structlog.get_config()
    with open(os.devnull, "w") as devnull:
        logs.configure(LogFormat.JSON, LogLevel.INFO, stream=devnull)  # JSON lines...
    structlog.configure(logger_factory=logs._Factory(writer))  # ...into this writer
    try:
        for _ in range(5_000):
            writer.write("y" * 199 + "\n")
        dropped = writer.dropped
        assert dropped > 0
        # Drain the pipe: the writer thread gets on, then reports what was lost.
        received = b""
        while b"log_lines_dropped" not in received:
            received += os.read(read_fd, 1 << 16)
        report = next(
            json.loads(line) for line in received.splitlines() if b"log_lines_dropped" in line
        )
        assert report["count"] == dropped and report["level"] == "warning"
    finally:
        structlog.configure(**saved)


def test_child_output_cannot_crowd_out_the_daemons_own_events(pipe: tuple[int, int]) -> None:
    _, write_fd = pipe
    writer = LineWriter(write_fd, max_bytes=64 * 1024)
    lower = logs._Lower(writer)
    in_thread(lambda: [lower.write("z" * 199 + "\n") for _ in range(50_000)])
    flood_dropped = writer.dropped_total
    assert flood_dropped > 0
    writer.write('{"event": "status_dumped"}\n')  # room is kept for it
    assert writer.dropped_total == flood_dropped


@pytest.mark.parametrize("reader_gone", ["before the writer", "after the writer"])
def test_a_closed_reader_costs_lines_never_an_exception(
    pipe: tuple[int, int], reader_gone: str
) -> None:
    """Before: the pipe cannot be reopened (ENXIO), the thread meets EPIPE. After: the first
    line meets it in the direct write, the rest go through the thread."""
    read_fd, write_fd = pipe
    if reader_gone == "before the writer":
        os.close(read_fd)  # EPIPE from now on (Python ignores SIGPIPE)
    writer = LineWriter(write_fd)
    if reader_gone == "after the writer":
        os.close(read_fd)
    for _ in range(100):
        writer.write("lost\n")
    assert writer.drain(10.0)
    assert writer.dropped_total == 100


def test_a_pipe_with_room_gets_the_line_before_write_returns(pipe: tuple[int, int]) -> None:
    """No trip through the thread when stderr is a pipe with room (issue 30: a wake-up per line
    was a tenth of the daemon's CPU in a crash storm); the shared fd's own flags are untouched."""
    read_fd, write_fd = pipe
    writer = LineWriter(write_fd)
    os.set_blocking(read_fd, False)
    for number in range(200):
        writer.write(f"line {number}\n")
        assert os.read(read_fd, 4096) == f"line {number}\n".encode()
    assert os.get_blocking(write_fd)


def test_a_socket_with_room_gets_the_line_before_write_returns() -> None:
    ours, reader = socket.socketpair()
    with ours, reader:
        writer = LineWriter(ours.fileno())
        reader.setblocking(False)
        writer.write("over a socket\n")
        assert reader.recv(4096) == b"over a socket\n"
        assert os.get_blocking(ours.fileno())


def test_lines_keep_their_order_when_the_pipe_fills_and_empties(pipe: tuple[int, int]) -> None:
    """Written at once while there is room, queued behind the thread when there is not: the
    reader still gets every line, in order."""
    read_fd, write_fd = pipe
    writer = LineWriter(write_fd, max_bytes=64 << 20)
    count = 20_000  # ~0.5 MB: many times the pipe
    received = bytearray()

    def read_slowly() -> None:
        while received.count(b"\n") < count:
            received.extend(os.read(read_fd, 1024))

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    for number in range(count):
        writer.write(f"{number:08d} {'x' * 16}\n")
    reader.join(30)
    assert not reader.is_alive()
    assert writer.dropped_total == 0
    lines = bytes(received).splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(count))


def test_a_paused_writer_holds_even_the_lines_it_could_write_at_once(
    pipe: tuple[int, int],
) -> None:
    """A question open on the terminal: nothing is written over it, not even to a pipe with
    room; what was held comes out after it, in order."""
    read_fd, write_fd = pipe
    writer = LineWriter(write_fd)
    os.set_blocking(read_fd, False)
    with writer.paused():
        writer.write("held 1\n")
        writer.write("held 2\n")
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 4096)
    assert writer.drain(10.0)
    assert os.read(read_fd, 4096) == b"held 1\nheld 2\n"
