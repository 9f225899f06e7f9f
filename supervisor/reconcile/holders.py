"""Who listens on a TCP port: every LISTEN socket, any address, and the processes that hold it.

Linux asks the kernel directly (netlink sock_diag: uid and inode per socket, no root, no process
scan), then maps inodes to pids through /proc/PID/fd, likeliest pids first. Elsewhere, or when
netlink fails: psutil system-wide, psutil per process (macOS), then `lsof`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass

from supervisor import procs
from supervisor.procs import ProcessFacts


@dataclass(frozen=True)
class Listener:
    address: str  # "127.0.0.1:4820", "0.0.0.0:4820", "[::]:4820", "[::1]:4820"
    uid: int | None
    inode: int | None  # None when the lookup method cannot tell
    pid: int | None  # set when the method reports it directly (psutil/lsof), else None


@dataclass(frozen=True)
class Holder:
    pid: int | None  # None: a socket of another uid, or an owner we could not find
    uid: int | None
    addresses: tuple[str, ...]  # every LISTEN address this pid holds on the port
    facts: ProcessFacts | None  # None if the pid is unknown or the process vanished


def format_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- netlink sock_diag (Linux) ------------------------------------------------------------------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x1
_NLM_F_DUMP = 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_TCP_LISTEN = 10

_NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid whose sport (big
# endian) the kernel honours as a filter when it walks the listening sockets of a dump.
_REQ_V2 = struct.Struct("=BBBBI2s46x")
# inet_diag_msg: family, state, timer, retrans, sockid{sport(be), dport, src, dst, if, cookie},
# expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_ERRNO = struct.Struct("=i")
_RECV_BYTES = 65536


class NetlinkError(OSError):
    """sock_diag is unavailable or answered with an error."""


def _request(family: int, port: int, seq: int) -> bytes:
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << _TCP_LISTEN, port.to_bytes(2, "big"))
    flags = _NLM_F_REQUEST | _NLM_F_DUMP
    return _NLMSG_HDR.pack(_NLMSG_HDR.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, seq, 0) + body


def _dump(sock: socket.socket, family: int, port: int, seq: int) -> list[Listener]:
    sock.send(_request(family, port, seq))
    found: list[Listener] = []
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
            (msg_family, state, _, _, sport, _, src, _, _, _, _, _, _, uid, inode) = (
                _DIAG_MSG.unpack_from(data, body)
            )
            # Kernels that ignore the sport filter still answer correctly: filter here too.
            if state != _TCP_LISTEN or int.from_bytes(sport, "big") != port:
                continue
            raw = src[:4] if msg_family == socket.AF_INET else src
            ip = socket.inet_ntop(msg_family, raw)
            found.append(Listener(format_address(ip, port), uid, inode, None))


class _NetlinkSocket:
    """One sock_diag socket per process, reused (half the cost of a lookup is opening one).

    Concurrent callers (worker threads) that find it busy use a socket of their own; a forked
    child never reuses its parent's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pid = 0
        self._seq = 0

    def listeners(self, port: int) -> tuple[Listener, ...]:
        if not self._lock.acquire(blocking=False):
            with _open_netlink() as sock:
                return _listeners_on(sock, port, 1)
        try:
            if self._sock is None or self._pid != os.getpid():
                self._sock, self._pid = _open_netlink(), os.getpid()
            self._seq = (self._seq + 2) % 0x7FFF_FFFF
            try:
                return _listeners_on(self._sock, port, self._seq)
            except BaseException:
                self._sock.close()
                self._sock = None
                raise
        finally:
            self._lock.release()


def _open_netlink() -> socket.socket:
    if not hasattr(socket, "AF_NETLINK"):
        raise NetlinkError("netlink is Linux-only")
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)


def _listeners_on(sock: socket.socket, port: int, seq: int) -> tuple[Listener, ...]:
    return (*_dump(sock, socket.AF_INET, port, seq), *_dump(sock, socket.AF_INET6, port, seq + 1))


_netlink = _NetlinkSocket()


def listeners_netlink(port: int) -> tuple[Listener, ...]:
    """LISTEN sockets on `port` from the kernel (Linux); raises OSError when unavailable."""
    return _netlink.listeners(port)


# --- fallbacks ----------------------------------------------------------------------------------


def listeners_psutil(port: int) -> tuple[Listener, ...]:
    """psutil.net_connections, system-wide (Linux; needs root on macOS)."""
    return tuple(
        Listener(format_address(e.ip, port), e.uid, None, e.pid)
        for e in procs.tcp_listeners_system(port)
    )


def listeners_per_process(port: int, pids: Iterable[int] | None = None) -> tuple[Listener, ...]:
    """Ask each process of ours (default: every process of our uid) for its sockets."""
    if pids is None:
        pids = procs.pids_of_uid(os.getuid())
    return tuple(
        Listener(format_address(e.ip, port), e.uid, None, e.pid)
        for e in procs.tcp_listeners_of(port, pids)
    )


LSOF_TIMEOUT_S = 10.0


def listeners_lsof(port: int) -> tuple[Listener, ...]:
    """`lsof -nP -iTCP:PORT -sTCP:LISTEN`; empty when lsof is missing or fails.

    `-iTCP@127.0.0.1:PORT` would miss wildcard binds, so only the port is given.
    """
    lsof = shutil.which("lsof") or next(
        (p for p in ("/usr/sbin/lsof", "/usr/bin/lsof") if os.access(p, os.X_OK)), None
    )
    if lsof is None:
        return ()
    try:
        result = subprocess.run(
            [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpuftn"],
            capture_output=True,
            timeout=LSOF_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(parse_lsof(result.stdout.decode("utf-8", "replace"), port))


def parse_lsof(output: str, port: int) -> Iterator[Listener]:
    """Parse `lsof -F puftn` output: p/u start a process set, f/t/n describe each file."""
    pid: int | None = None
    uid: int | None = None
    kind = ""
    seen: set[tuple[int | None, str]] = set()
    for line in output.splitlines():
        tag, value = line[:1], line[1:]
        if tag == "p":
            pid, uid = int(value), None
        elif tag == "u":
            uid = int(value) if value.isdigit() else None
        elif tag == "f":
            kind = ""
        elif tag == "t":
            kind = value
        elif tag == "n":
            host, _, port_text = value.rpartition(":")
            if port_text != str(port):
                continue
            if host == "*":
                host = "::" if kind == "IPv6" else "0.0.0.0"
            address = format_address(host.strip("[]"), port)
            if (pid, address) not in seen:  # one line per fd; a dup'ed socket is one listener
                seen.add((pid, address))
                yield Listener(address, uid, None, pid)


def find_listeners(port: int) -> tuple[Listener, ...]:
    """Every TCP socket in LISTEN state on `port`, whatever the address."""
    methods: list[Callable[[int], tuple[Listener, ...]]]
    if sys.platform == "linux":
        methods = [listeners_netlink, listeners_psutil]
    else:
        methods = [listeners_per_process]
    for method in methods:
        try:
            return method(port)
        except OSError:
            continue
    return listeners_lsof(port)


# --- inode -> pid (Linux) -----------------------------------------------------------------------


def _socket_links(inodes: Iterable[int]) -> dict[str, int]:
    return {f"socket:[{inode}]": inode for inode in inodes}


def _held(pid: int, links: Mapping[str, int]) -> set[int]:
    """Which of the sockets (as /proc fd link texts) `pid` holds; empty if it is gone."""
    base = f"/proc/{pid}/fd/"
    try:
        names = os.listdir(base)
    except OSError:
        return set()
    found = set()
    for name in names:
        try:
            inode = links.get(os.readlink(base + name))
        except OSError:
            continue
        if inode is not None:
            found.add(inode)
    return found


@functools.cache
def _fd_counts_work() -> bool:
    """Does stat(/proc/PID/fd).st_size count open fds (Linux 6.2+)? We always have some open."""
    try:
        return os.stat(f"/proc/{os.getpid()}/fd").st_size > 0
    except OSError:
        return False


def _likely_pids(candidates: Iterable[int], uid: int) -> Generator[int, None, None]:
    """Pids to search for a socket of `uid`, likeliest first, each once.

    Candidates (e.g. a PID file's pid) and their descendants; then processes of `uid`, newest
    first (a fresh holder is likelier), those with at most 3 open fds (stdio only, like an idle
    `sleep`) put off until the end. One stat per process tells both its uid and its fd count.
    """
    seen: set[int] = set()
    for candidate in candidates:
        for pid in (candidate, *procs.descendant_pids(candidate)):
            if pid not in seen:
                seen.add(pid)
                yield pid
    try:
        proc_dir = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        names = [name for name in os.listdir(proc_dir) if name.isdigit()]
        names.sort(key=int, reverse=True)
        counted = _fd_counts_work()
        later: list[int] = []
        for name in names:
            try:
                info = os.stat(name + "/fd", dir_fd=proc_dir)
            except OSError:
                continue
            pid = int(name)
            if info.st_uid != uid or pid in seen:
                continue
            if counted and info.st_size <= 3:
                if info.st_size > 0:  # no fds at all (a kernel thread) cannot hold a socket
                    later.append(pid)
                continue
            yield pid
    finally:
        os.close(proc_dir)
    yield from later


def _sharers(pid: int, inode: int, links: Mapping[str, int]) -> list[int]:
    """`pid` and its relatives holding the same socket: forked workers share one listener."""
    top = pid
    while True:
        parent = procs.parent_pid(top)
        if parent is None or parent <= 1 or inode not in _held(parent, links):
            break
        top = parent
    sharers = [top]
    sharers += [p for p in procs.descendant_pids(top) if p == pid or inode in _held(p, links)]
    if pid not in sharers:
        sharers.append(pid)
    return sharers


def _map_inodes(
    listeners: Iterable[Listener], candidates: Iterable[int], uid: int
) -> dict[int, list[int]]:
    """inode -> pids holding it, for sockets of `uid`, stopping once every inode has an owner."""
    inodes = {lst.inode for lst in listeners if lst.inode is not None}
    links = _socket_links(inodes)
    owners: dict[int, list[int]] = {}
    if not inodes:
        return owners
    with contextlib.closing(_likely_pids(candidates, uid)) as likely:
        for pid in likely:
            for inode in _held(pid, links) - owners.keys():
                owners[inode] = _sharers(pid, inode, {k: v for k, v in links.items() if v == inode})
            if len(owners) == len(inodes):
                break
    return owners


def find_holders(port: int, *, candidates: Iterable[int] = ()) -> tuple[Holder, ...]:
    """The processes holding `port` in LISTEN, one per pid with all its addresses.

    Sockets of another uid, and sockets whose owner cannot be found (it just exited, or
    /proc/PID/fd is not readable), become holders with `pid=None`, grouped by uid.
    """
    listeners = find_listeners(port)
    if not listeners:
        return ()
    our_uid = os.getuid()
    ours = [
        lst for lst in listeners if lst.pid is None and lst.inode is not None and lst.uid == our_uid
    ]
    owners = _map_inodes(ours, candidates, our_uid) if ours else {}

    by_pid: dict[int, list[str]] = {}
    uid_of: dict[int, int | None] = {}
    unknown: dict[int | None, list[str]] = {}
    for lst in listeners:
        pids = [lst.pid] if lst.pid is not None else owners.get(lst.inode or -1, [])
        if not pids:
            unknown.setdefault(lst.uid, []).append(lst.address)
        for pid in pids:
            addresses = by_pid.setdefault(pid, [])
            if lst.address not in addresses:
                addresses.append(lst.address)
            uid_of[pid] = lst.uid

    holders = []
    for pid, addresses in by_pid.items():
        facts = procs.facts(pid)
        uid = facts.uid if facts is not None and facts.uid is not None else uid_of[pid]
        holders.append(Holder(pid, uid, tuple(addresses), facts))
    for uid, addresses in unknown.items():
        holders.append(Holder(None, uid, tuple(dict.fromkeys(addresses)), None))
    return tuple(holders)


def pids_listening(port: int, pids: Iterable[int]) -> set[int]:
    """Which of `pids` hold a LISTEN socket on `port` (the readiness probe's identity check)."""
    wanted = list(dict.fromkeys(pids))
    if not wanted:
        return set()
    if sys.platform == "linux":
        try:
            listeners = listeners_netlink(port)
        except OSError:
            pass
        else:
            links = _socket_links(lst.inode for lst in listeners if lst.inode is not None)
            if not links:
                return set()
            return {pid for pid in wanted if _held(pid, links)}
    return {entry.pid for entry in procs.tcp_listeners_of(port, wanted) if entry.pid is not None}
