"""Inherited listening sockets (`socket.inherit`): bound by the daemon, handed to every spawn.

The daemon binds `host:port` once the preflight has made the port free and keeps the socket in
`Sockets` (held by the daemon's `Runtime`, keyed by sidecar name), not in an attempt: crashes,
backoff and restarts never close it, so no other process can take the port and clients wait in
the backlog. Each child gets it as fd 3 with systemd's `sd_listen_fds` variables.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Mapping, Sequence

import anyio

from supervisor.system import logs
from supervisor.system.net import format_address

ENV_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
BACKLOG = socket.SOMAXCONN  # clients of a restarting child wait here


class BindError(Exception):
    """The address could not be bound; `in_use` when another socket holds it (worth waiting)."""

    def __init__(self, address: str, reason: str, *, in_use: bool) -> None:
        super().__init__(f"cannot bind {address} (socket.inherit): {reason}")
        self.address = address
        self.reason = reason
        self.in_use = in_use


class ListenSocket:
    """One listening socket the daemon holds for a sidecar."""

    def __init__(self, host: str, port: int, sock: socket.socket) -> None:
        self.host = host
        self.port = port
        self.sock = sock
        self.fd = sock.fileno()
        self.inode = os.fstat(self.fd).st_ino  # what the child's fd 3 must link to
        self.address = format_address(str(sock.getsockname()[0]), port)

    def refresh(self) -> None:
        """Make it again what we bound, whatever the previous child did to it: every holder
        shares one socket and one open file description. Node sets O_NONBLOCK (a blocking
        `accept()` then fails with EAGAIN) and listens again with a backlog of 511; a
        shutdown() by any holder ends the listening for good. Raises OSError if it is lost."""
        if not self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise OSError(errno.EINVAL, "it no longer listens (a holder shut it down)")
        os.set_blocking(self.fd, True)
        self.sock.listen(BACKLOG)

    def close(self) -> None:
        self.sock.close()


def listen_env(name: str) -> dict[str, str]:
    """The sd_listen_fds variables but LISTEN_PID, which only the child itself can know."""
    return {"LISTEN_FDS": "1", "LISTEN_FDNAMES": name}


async def bind(host: str, port: int) -> ListenSocket:
    """Bind and listen on `host:port` (the first address `host` resolves to)."""
    flags = socket.AI_PASSIVE | socket.AI_NUMERICSERV
    found: Sequence[tuple[int, object, object, object, tuple[object, ...]]]
    try:
        try:  # an address literal needs no resolver (nor a worker thread)
            found = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=flags | socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    except (socket.gaierror, UnicodeError) as exc:
        reason = f"cannot resolve {host!r}: {getattr(exc, 'strerror', None) or exc}"
        raise BindError(f"{host}:{port}", reason, in_use=False) from None
    family, _, _, _, sockaddr = found[0]
    ip = str(sockaddr[0])
    address = format_address(ip, port)
    # Python sockets are created non-inheritable (O_CLOEXEC): no other child ever gets this fd.
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # TIME_WAIT leftovers of connections a killed child had accepted must not block a rebind.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and ip == "::":
            # "::" serves IPv4 too, as servers binding it usually do (whatever bindv6only says).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
        port = int(sock.getsockname()[1])  # port 0 (`port = "auto"`): the one the kernel chose
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise BindError(address, reason, in_use=exc.errno == errno.EADDRINUSE) from None
    return ListenSocket(host, port, sock)


class Sockets:
    """The inherited sockets the daemon holds, by sidecar name."""

    def __init__(self) -> None:
        self._held: dict[str, ListenSocket] = {}

    def get(self, name: str) -> ListenSocket | None:
        return self._held.get(name)

    def inodes(self) -> frozenset[int]:
        """Every socket the daemon holds: never a port holder to reclaim."""
        return frozenset(s.inode for s in self._held.values())

    async def acquire(self, name: str, host: str, port: int) -> ListenSocket:
        """The socket `name` holds on `host:port`, bound now if it holds none (or another one).

        Raises BindError.
        """
        current = self._held.get(name)
        if current is not None and (current.host, current.port) == (host, port):
            try:
                current.refresh()
            except OSError as exc:
                logs.get(sidecar=name).warning(
                    "socket_unusable", address=current.address, error=exc.strerror or str(exc)
                )
            else:
                return current
        if current is not None:
            self.release(name)
        bound = await bind(host, port)
        self._held[name] = bound
        logs.get(sidecar=name).info(
            "socket_bound", address=bound.address, fd=bound.fd, inode=bound.inode
        )
        return bound

    def release(self, name: str) -> None:
        held = self._held.pop(name, None)
        if held is not None:
            held.close()
            logs.get(sidecar=name).info("socket_closed", address=held.address)

    def retain(self, wanted: Mapping[str, tuple[str, int]]) -> None:
        """Close every socket not wanted at its address (`name -> (host, port)`): a reload."""
        for name, held in list(self._held.items()):
            if wanted.get(name) != (held.host, held.port):
                self.release(name)

    def close_all(self) -> None:
        for name in list(self._held):
            self.release(name)
