"""`control.sock` as the OS sees it: bind and connect through the state dir's fd, peer uid.

AF_UNIX paths are limited to ~107 bytes (104 on macOS) and a state dir can be longer (pytest's
tmp dirs are). On Linux both sides go through `/proc/self/fd/<dir fd>/control.sock`, which is
short whatever the state dir's path and names the very directory we hold open. Elsewhere the
full path is used when it fits; otherwise both bind and connect relative to the state dir
after an fchdir, restored at once (the daemon does it on its loop thread, where nothing else
runs in between; a command is single-threaded).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
from collections.abc import Iterator

SOCKET_NAME = "control.sock"
SOCKET_MODE = 0o600
SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108  # including the terminating NUL

# macOS <sys/un.h>: SOL_LOCAL, LOCAL_PEERCRED (struct xucred), LOCAL_PEERPID.
_SOL_LOCAL = 0
_LOCAL_PEERCRED = 0x001
_LOCAL_PEERPID = 0x002
_XUCRED_SIZE = 76  # u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]


def _fits(path: str) -> bool:
    return len(os.fsencode(path)) < SUN_PATH_MAX


def socket_path(dir_fd: int, dir_path: str, name: str = SOCKET_NAME) -> str | None:
    """A path that reaches `name` in the directory open as `dir_fd`; None if none fits."""
    if sys.platform == "linux":
        return f"/proc/self/fd/{dir_fd}/{name}"
    full = os.path.join(dir_path, name)
    return full if _fits(full) else None


@contextlib.contextmanager
def _in_dir(dir_fd: int) -> Iterator[None]:
    """cwd = the directory of `dir_fd` for a moment (only where no short path exists)."""
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fchdir(dir_fd)
        try:
            yield
        finally:
            os.fchdir(here)
    finally:
        os.close(here)


def bind(dir_fd: int, dir_path: str, backlog: int, name: str = SOCKET_NAME) -> socket.socket:
    """A listening, non-blocking socket at `name` in the dir (mode 0600; a stale one replaced).

    The caller holds the state dir's lock, so whatever is at `name` is a leftover of ours.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path = socket_path(dir_fd, dir_path, name)
        # umask 0177 while binding: the socket is 0600 from its first instant, not after a
        # chmod. Process-wide, but nothing else creates files or spawns during this call.
        old_umask = os.umask(0o177)
        try:
            if path is not None:
                sock.bind(path)
            else:
                with _in_dir(dir_fd):
                    sock.bind(name)
        finally:
            os.umask(old_umask)
        os.chmod(name, SOCKET_MODE, dir_fd=dir_fd)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def connect(
    dir_fd: int, dir_path: str, timeout_s: float | None, name: str = SOCKET_NAME
) -> socket.socket:
    """A blocking socket connected to `name` in the dir (raises OSError as connect does)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        path = socket_path(dir_fd, dir_path, name)
        if path is not None:
            sock.connect(path)
        else:  # a command is single-threaded: a moment in the dir harms nothing
            with _in_dir(dir_fd):
                sock.connect(name)
    except BaseException:
        sock.close()
        raise
    return sock


def peer_credentials(sock: socket.socket) -> tuple[int | None, int | None]:
    """(pid, uid) of the process at the other end; None for what the OS cannot tell."""
    if sys.platform == "linux":
        pid, uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
        return pid, uid
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        data = sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERCRED, _XUCRED_SIZE)
        _version, uid = struct.unpack_from("=Ii", data)
        pid: int | None = None
        if sys.platform == "darwin":
            with contextlib.suppress(OSError):
                pid = struct.unpack("i", sock.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, 4))[0]
        return pid, uid
    return None, None
