"""Who holds a port, with the facts the classifier needs: one Holder per process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from supervisor.system import net, procs
from supervisor.system.procs import ProcessFacts


@dataclass(frozen=True)
class Holder:
    pid: int | None  # None: a socket of another uid, or an owner we could not find
    uid: int | None
    addresses: tuple[str, ...]  # every LISTEN address this pid holds on the port
    facts: ProcessFacts | None  # None if the pid is unknown or the process vanished


def find_holders(
    port: int, listeners: tuple[net.Listener, ...] | None = None
) -> tuple[Holder, ...]:
    """Every process holding `port` in LISTEN, one per pid with all its addresses.

    Sockets of another uid (unless we are root), and sockets whose owner cannot be found (it
    just exited, or /proc/PID/fd is not readable), become holders with `pid=None`, grouped by
    uid. Blocking (a /proc scan): call it from a worker thread in async code. Raises
    net.LookupFailed when the port cannot be looked up.
    """
    if listeners is None:
        listeners = net.find_listeners(port)
    if not listeners:
        return ()
    our_uid = os.getuid()
    everyone = os.geteuid() == 0
    mappable = [
        lst
        for lst in listeners
        if lst.pid is None and lst.inode is not None and (everyone or lst.uid == our_uid)
    ]
    owners = net.map_inodes(mappable, our_uid) if mappable else {}

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
