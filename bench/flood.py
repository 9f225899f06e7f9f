"""Client load on control.sock for `bench control`: a same-uid garbage flood, a hold of idle
connections, and the crash -> ready intervals of a crash-looping sidecar measured meanwhile.

The flood runs in processes of its own (a Python thread in the bench would be held back by the
GIL, and share the reader thread's): each keeps FLOOD_SOCKETS connections busy with garbage
lines as fast as the daemon takes them; half of them read the replies, half never do (the daemon
drops those once their outbox is full, and they reconnect).
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support import PYTHON, Daemon, stamp_ns

FLOOD_SOCKETS = 16

FLOODER = textwrap.dedent(
    """
    import selectors, socket, sys
    path, count = sys.argv[1], int(sys.argv[2])
    garbage = (b"{not json at all, " + b"x" * 48 + b"}\\n") * 1024  # 68 KiB of bad lines
    sel = selectors.DefaultSelector()

    def connect(i):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        reads = i % 2 == 0  # half read their replies, half never do
        sel.register(sock, selectors.EVENT_WRITE | (selectors.EVENT_READ if reads else 0), i)
        return True

    missing = [i for i in range(count) if not connect(i)]
    print("flooding", flush=True)
    while True:  # blocks until the daemon takes more: it spins only as fast as it is served
        for i in list(missing):
            if connect(i):
                missing.remove(i)
        for key, events in sel.select(timeout=0.05):
            sock = key.fileobj
            try:
                if events & selectors.EVENT_READ:
                    sock.recv(1 << 16)
                if events & selectors.EVENT_WRITE:
                    sock.send(garbage)
            except BlockingIOError:
                continue
            except OSError:
                sel.unregister(sock)
                sock.close()
                missing.append(key.data)
    """
)


@contextlib.contextmanager
def garbage_flood(state_dir: Path, processes: int = 2) -> Iterator[None]:
    """`processes` flooders on `<state_dir>/control.sock` until the block ends."""
    path = str(state_dir / "control.sock")
    flooders = [
        subprocess.Popen(
            [PYTHON, "-c", FLOODER, path, str(FLOOD_SOCKETS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        for flooder in flooders:
            assert flooder.stdout is not None
            if flooder.stdout.readline() != b"flooding\n":
                raise RuntimeError("a flooder did not start")
        yield
    finally:
        for flooder in flooders:
            flooder.kill()
        for flooder in flooders:
            flooder.wait(10)
            if flooder.stdout is not None:
                flooder.stdout.close()


@contextlib.contextmanager
def idle_hold(state_dir: Path, count: int) -> Iterator[None]:
    """`count` connections opened and left idle until the block ends (the daemon keeps some
    and refuses the others `busy`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 256)), hard))
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_connect(str(state_dir / "control.sock")))
        yield
    finally:
        for sock in socks:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _connect(path: str, timeout_s: float = 30.0) -> socket.socket:
    """Connected; a full backlog (EAGAIN: the daemon has not accepted the last ones yet) is
    waited out."""
    deadline = time.monotonic() + timeout_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except BlockingIOError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)
            continue
        return sock


def crash_to_ms(daemon: Daemon, name: str, event: str, since_ns: int, until_ns: int) -> list[float]:
    """Each exit of `name` in [since, until) to its next `event` (sidecar_ready,
    sidecar_spawned), by the daemon's own timestamps."""
    exits = [stamp_ns(e) for e in daemon.find("sidecar_exited", sidecar=name)]
    readies = sorted(stamp_ns(e) for e in daemon.find(event, sidecar=name))
    intervals = []
    for exited in exits:
        if not since_ns <= exited < until_ns:
            continue
        ready = next((r for r in readies if r >= exited), None)
        if ready is not None and ready < until_ns:
            intervals.append((ready - exited) / 1e6)
    return intervals


def window(seconds: float) -> tuple[int, int]:
    """Let `seconds` pass (the load runs meanwhile); the window's bounds in time.time_ns()."""
    began = time.time_ns()
    time.sleep(seconds)
    return began, time.time_ns()
