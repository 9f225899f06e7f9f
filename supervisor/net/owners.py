"""Socket -> processes: which pids hold a LISTEN socket (Linux: its inode in /proc/PID/fd).

The search goes likeliest pids first (candidates such as a PID file's pid and their
descendants, then processes of the socket's uid, newest first) and stops once every socket
has an owner; relatives sharing one socket (forked workers) are all reported.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Generator, Iterable, Mapping

from supervisor import procs
from supervisor.net import netlink
from supervisor.net.listener import Listener


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


def map_inodes(
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


def pids_listening(port: int, pids: Iterable[int]) -> set[int]:
    """Which of `pids` hold a LISTEN socket on `port` (the readiness probe's identity check)."""
    wanted = list(dict.fromkeys(pids))
    if not wanted:
        return set()
    if sys.platform == "linux":
        try:
            listeners = netlink.listeners(port)
        except OSError:
            pass
        else:
            links = _socket_links(lst.inode for lst in listeners if lst.inode is not None)
            if not links:
                return set()
            return {pid for pid in wanted if _held(pid, links)}
    return {entry.pid for entry in procs.tcp_listeners_of(port, wanted) if entry.pid is not None}


def pids_holding(inode: int, pids: Iterable[int]) -> set[int] | None:
    """Which of `pids` hold the socket `inode` in one of their fds; None where /proc cannot tell.

    With an inherited socket the daemon holds the listener too: "the listener is our child's"
    must be read from the child's own fds, never from whichever holder is found first.
    """
    if sys.platform != "linux":
        return None
    links = _socket_links([inode])
    return {pid for pid in dict.fromkeys(pids) if _held(pid, links)}


def accepted_by(port: int, peer_port: int, pids: Iterable[int]) -> bool | None:
    """Has one of `pids` accepted the connection from our `peer_port` to `port`?

    True: one of them holds it; False: another process holds it; None: no process holds it (it
    waits in the backlog, or the server closed it already).
    """
    wanted = list(dict.fromkeys(pids))
    if sys.platform == "linux":
        try:
            inode = netlink.connection_inode(port, peer_port)
        except OSError:
            pass
        else:
            if not inode:
                return None
            return bool(pids_holding(inode, wanted))
    return True if procs.tcp_connection_pids(port, peer_port, wanted) else None
