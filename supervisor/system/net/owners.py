"""Socket -> processes: which pids hold a LISTEN socket (Linux: its inode in /proc/PID/fd).

Every holder is found, not the first one: a socket shared by fork or passed with SCM_RIGHTS has
several, and one foreign co-holder must be enough to keep us from killing anybody. The search
covers every process whose fd table we may read (all of them as root; our own uid otherwise:
another user's fd table is closed to us, so a co-holder of another uid is seen only by root).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Mapping

from supervisor.system import procs
from supervisor.system.net import netlink
from supervisor.system.net.listener import Listener

_DIR = os.O_RDONLY | os.O_DIRECTORY


def _socket_links(inodes: Iterable[int]) -> dict[str, int]:
    return {f"socket:[{inode}]": inode for inode in inodes}


def _held_in(fd_dir: int, links: Mapping[str, int]) -> set[int]:
    """Which of the sockets (as /proc fd link texts) the fd table open as `fd_dir` holds."""
    found: set[int] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return found
    for name in names:
        try:
            inode = links.get(os.readlink(name, dir_fd=fd_dir))
        except OSError:
            continue
        if inode is not None:
            found.add(inode)
    return found


def _held(pid: int, links: Mapping[str, int], proc_dir: int | None = None) -> set[int]:
    """Which of the sockets `pid` holds; empty if it is gone or its fd table is closed to us."""
    try:
        fd_dir = os.open(
            f"{pid}/fd" if proc_dir is not None else f"/proc/{pid}/fd", _DIR, dir_fd=proc_dir
        )
    except OSError:
        return set()
    try:
        return _held_in(fd_dir, links)
    finally:
        os.close(fd_dir)


def _readable_pids(proc_dir: int, uid: int) -> Iterator[int]:
    """Pids whose fd table we may read: every process as root, else those of `uid`."""
    everyone = os.geteuid() == 0
    for name in os.listdir(proc_dir):
        if not name.isdigit():
            continue
        if not everyone:
            try:
                if os.stat(name, dir_fd=proc_dir).st_uid != uid:
                    continue
            except OSError:
                continue
        yield int(name)


def map_inodes(listeners: Iterable[Listener], uid: int) -> dict[int, list[int]]:
    """inode -> every pid holding it, for the sockets in `listeners` (a full scan).

    Every fd table we may read is read: what would let the scan stop early or skip processes
    is not sound. The socket's reference count (/proc/net/tcp's `refcnt`, sock_diag) counts the
    kernel's references to the sock, not the descriptors that share its file: it stays 1
    through dup() and fork() (measured), and no interface shows a file's count. Nor does the
    socket's uid bound its holders: a root parent's worker that drops privileges after fork(),
    a setuid program exec'd by a holder, or a descriptor passed with SCM_RIGHTS all hold it
    under another uid. So the scan is cut in its constant, not its extent: each fd table is
    opened once relative to an open /proc (no path walk of /proc/PID/fd per descriptor) and its
    links are read relative to that directory.
    """
    inodes = {lst.inode for lst in listeners if lst.inode is not None}
    owners: dict[int, list[int]] = {}
    if not inodes:
        return owners
    links = _socket_links(inodes)
    try:
        proc_dir = os.open("/proc", _DIR)
    except OSError:
        return owners
    try:
        for pid in _readable_pids(proc_dir, uid):
            for inode in _held(pid, links, proc_dir):
                owners.setdefault(inode, []).append(pid)
    finally:
        os.close(proc_dir)
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
