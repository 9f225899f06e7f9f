"""The receiving side of sd_notify, per sidecar: `ready.probe = "notify"` and the notify watchdog.

Each sidecar gets its own datagram socket, `<state_dir>/<name>/notify.sock`, as NOTIFY_SOCKET.
The kernel stamps every datagram with its sender's pid (SO_PASSCRED / SCM_CREDENTIALS, which a
sender cannot forge without privileges), and a message counts only when that sender is the
sidecar's child or born of it (in its session, or a descendant); a stranger that writes to the
socket is logged and ignored. (`supervisor.notify` is the other direction: the daemon's own
messages to systemd.) Linux only: elsewhere no message can be attributed, so none is accepted.
"""

from __future__ import annotations

import array
import contextlib
import os
import secrets
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from supervisor.core import show
from supervisor.system import procs

SOCKET_NAME = "notify.sock"
MAX_DATAGRAM = 4096
STATUS_CAP = 200
MAX_PATH = 107  # sun_path holds 108 bytes with its NUL
_UCRED = struct.Struct("iII")  # pid, uid, gid
_MAX_FDS = 16
SUPPORTED = hasattr(socket, "SO_PASSCRED") and hasattr(socket, "SCM_CREDENTIALS")


def parse_message(data: bytes) -> dict[str, str]:
    """`KEY=VALUE` lines (sd_notify's format); lines without `=` are ignored."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """One sidecar's NOTIFY_SOCKET for the whole of one attempt."""

    def __init__(self, sock: socket.socket, address: str, path: Path | None) -> None:
        self.sock = sock
        self.address = address  # the NOTIFY_SOCKET value: a path, or @name (abstract)
        self._path = path
        self.ready = anyio.Event()
        self.status: str | None = None
        self.last_ping: float | None = None  # monotonic time of the latest WATCHDOG=1
        self._ping = anyio.Event()

    @classmethod
    def bind(cls, folder: Path) -> NotifySocket:
        """Bound in `folder` (the sidecar's folder of the state dir, ours, 0700); a path too
        long for a unix socket falls back to a random abstract name (Linux)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if SUPPORTED:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            path = folder / SOCKET_NAME
            if len(os.fsencode(path)) <= MAX_PATH:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # an earlier attempt's (unlink never follows a symlink)
                sock.bind(str(path))
                os.chmod(path, 0o600)
                result = cls(sock, str(path), path)
            else:
                name = f"sidecar-supervisor/{os.getpid()}/{secrets.token_hex(8)}"
                sock.bind("\0" + name)
                result = cls(sock, "@" + name, None)
            sock.setblocking(False)
            return result
        except OSError:
            sock.close()
            raise

    def close(self) -> None:
        self.sock.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)

    async def pinged(self) -> None:
        """Until the next WATCHDOG=1."""
        await self._ping.wait()

    async def receive(
        self,
        child_pid: int,
        on_message: Callable[[dict[str, str]], None],
        on_rejected: Callable[[int | None, str], None],
    ) -> None:
        """Handle datagrams until cancelled: those of the child's own processes only."""
        while True:
            await anyio.wait_readable(self.sock)
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(
                    MAX_DATAGRAM,
                    socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(_MAX_FDS * 4),
                )
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as exc:  # never out into the attempt: no more notifications, said why
                on_rejected(None, f"the notify socket failed: {exc.strerror or exc}")
                return
            # Judge the sender before closing what it passed: closing a BARRIER=1 fd releases
            # systemd-notify, which then exits, and a gone sender cannot be identified.
            sender = _sender(ancillary)
            why = _refusal(sender, child_pid)
            _close_passed_fds(ancillary)
            if why is not None:
                on_rejected(sender, why)
                continue
            fields = parse_message(data)
            self._apply(fields)
            on_message(fields)

    def _apply(self, fields: dict[str, str]) -> None:
        if fields.get("READY") == "1":
            self.ready.set()
        if "STATUS" in fields:
            self.status = show.printable(fields["STATUS"], STATUS_CAP)
        if fields.get("WATCHDOG") == "1":
            self.last_ping = time.monotonic()
            self._ping.set()
            self._ping = anyio.Event()


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The sender's pid (None if the kernel gave none)."""
    pid: int | None = None
    for level, kind, data in ancillary:
        credentials = level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
        if SUPPORTED and credentials and len(data) >= _UCRED.size:
            pid = _UCRED.unpack(data[: _UCRED.size])[0]
    return pid


def _close_passed_fds(ancillary: list[tuple[int, int, bytes]]) -> None:
    """Every fd passed along (SCM_RIGHTS: BARRIER=1) is closed: we keep none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _refusal(sender: int | None, child_pid: int) -> str | None:
    """None when `sender` is the child or born of it; else why its message is ignored."""
    if sender is None or sender <= 0:
        return "the sender cannot be identified (no credentials)"
    if sender == child_pid:
        return None
    try:
        if os.getsid(sender) == child_pid:  # the child leads its own session
            return None
    except ProcessLookupError:
        return "the sender exited before it could be identified"
    except PermissionError:
        pass
    if sender in procs.descendant_pids(child_pid):
        return None
    return "the sender is not a process of this sidecar"
