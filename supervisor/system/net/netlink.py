"""netlink sock_diag (Linux): the kernel's own list of LISTEN sockets on a port.

It gives uid and inode per socket without root and without a process scan; one socket per
process is reused, since opening one is half the cost of a lookup.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from supervisor.system.net.listener import Listener, format_address

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_ESTABLISHED = 1
_TCP_LISTEN = 10

_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid whose sport and
# dport (big endian) the kernel honours as filters when it walks the sockets of a dump.
_REQ_V2 = struct.Struct("=BBBBI2s2s44x")
# inet_diag_msg: family, state, timer, retrans, sockid{sport(be), dport, src, dst, if, cookie},
# expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_ERRNO = struct.Struct("=i")
_RECV_BYTES = 65536

T = TypeVar("T")


class NetlinkError(OSError):
    """sock_diag is unavailable or answered with an error."""


_ANY_BUT_LISTEN = ((1 << 13) - 1) & ~(1 << _TCP_LISTEN) & ~1  # TCP_ESTABLISHED .. NEW_SYN_RECV


def _request(family: int, states: int, sport: int, dport: int, seq: int) -> bytes:
    body = _REQ_V2.pack(
        family, socket.IPPROTO_TCP, 0, 0, states, sport.to_bytes(2, "big"), dport.to_bytes(2, "big")
    )
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


@dataclass(frozen=True)
class _Diag:
    """The fields of one inet_diag_msg we use (ports in host order)."""

    family: int
    state: int
    sport: int
    dport: int
    src: bytes
    uid: int
    inode: int


def _diag_dump(sock: socket.socket, request: bytes, seq: int) -> list[_Diag]:
    """Every inet_diag_msg a dump answers."""
    sock.send(request)
    found: list[_Diag] = []
    while True:
        data = sock.recv(_RECV_BYTES)
        if not data:
            raise NetlinkError("sock_diag closed the dump early")
        offset = 0
        while offset + _NLMSG_HDR.size <= len(data):
            length, kind, _flags, msg_seq, _ = _NLMSG_HDR.unpack_from(data, offset)
            if length < _NLMSG_HDR.size:
                raise NetlinkError(f"malformed netlink message (length {length})")
            body = offset + _NLMSG_HDR.size
            offset += (length + 3) & ~3
            if msg_seq != seq:  # left over from an earlier, interrupted dump
                continue
            if kind == _NLMSG_DONE:
                return found
            if kind == _NLMSG_ERROR:
                (code,) = _ERRNO.unpack_from(data, body)
                if code == 0:
                    continue
                raise NetlinkError(-code, os.strerror(-code))
            if kind != _SOCK_DIAG_BY_FAMILY or length - _NLMSG_HDR.size < _DIAG_MSG.size:
                continue
            (family, state, _, _, sport, dport, src, _, _, _, _, _, _, uid, inode) = (
                _DIAG_MSG.unpack_from(data, body)
            )
            sport_n, dport_n = int.from_bytes(sport, "big"), int.from_bytes(dport, "big")
            found.append(_Diag(family, state, sport_n, dport_n, src, uid, inode))


def _dump(sock: socket.socket, family: int, port: int, seq: int) -> list[Listener]:
    found: list[Listener] = []
    for msg in _diag_dump(sock, _request(family, 1 << _TCP_LISTEN, port, 0, seq), seq):
        # Kernels that ignore the sport filter still answer correctly: filter here too.
        if msg.state != _TCP_LISTEN or msg.sport != port:
            continue
        raw = msg.src[:4] if msg.family == socket.AF_INET else msg.src
        ip = socket.inet_ntop(msg.family, raw)
        found.append(Listener(format_address(ip, port), msg.uid, msg.inode, None))
    return found


def _connection_on(sock: socket.socket, port: int, peer_port: int, seq: int) -> int | None:
    for offset, family in enumerate((socket.AF_INET, socket.AF_INET6)):
        request = _request(family, _ANY_BUT_LISTEN, port, peer_port, seq + offset)
        for msg in _diag_dump(sock, request, seq + offset):
            if (msg.sport, msg.dport) != (port, peer_port):
                continue
            # After the server's close() the socket lingers (FIN_WAIT...) without an inode.
            return msg.inode if msg.state == _TCP_ESTABLISHED else 0
    return None


class _NetlinkSocket:
    """One sock_diag socket per process, reused.

    Concurrent callers (worker threads) that find it busy use a socket of their own; a forked
    child never reuses its parent's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0
        self._seq = 0

    def run(self, query: Callable[[socket.socket, int], T]) -> T:
        """`query(sock, seq)` on the shared socket (or a fresh one when it is busy)."""
        if not self._lock.acquire(blocking=False):
            with _open() as sock:
                return query(sock, 1)
        try:
            if self._sock is None or self._pid != os.getpid():
                self._sock, self._pid = _open(), os.getpid()
            self._seq = (self._seq + 2) % 0x7FFF_FFFF
            try:
                return query(self._sock, self._seq)
            except BaseException:
                self._sock.close()
                self._sock = None
                raise
        finally:
            self._lock.release()


def _open() -> socket.socket:
    if not hasattr(socket, "AF_NETLINK"):
        raise NetlinkError("netlink is Linux-only")
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)


def _listeners_on(sock: socket.socket, port: int, seq: int) -> tuple[Listener, ...]:
    return (*_dump(sock, socket.AF_INET, port, seq), *_dump(sock, socket.AF_INET6, port, seq + 1))


_netlink = _NetlinkSocket()


def listeners(port: int) -> tuple[Listener, ...]:
    """LISTEN sockets on `port` from the kernel (Linux); raises OSError when unavailable."""
    return _netlink.run(lambda sock, seq: _listeners_on(sock, port, seq))


def connection_inode(port: int, peer_port: int) -> int | None:
    """The server side of the TCP connection from `peer_port` to local `port`: its inode once a
    process has accepted it, 0 while it waits in the backlog (or after the server closed it),
    None if there is no such connection. Raises OSError when netlink is unavailable."""
    return _netlink.run(lambda sock, seq: _connection_on(sock, port, peer_port, seq))
