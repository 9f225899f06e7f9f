"""OS networking: who listens on a TCP port (netlink, psutil, lsof) and which processes hold it."""

from supervisor.system.net.listener import Listener, format_address
from supervisor.system.net.lookup import (
    LookupFailed,
    anyone_listening,
    find_listeners,
    find_listeners_async,
)
from supervisor.system.net.owners import accepted_by, map_inodes, pids_holding, pids_listening

__all__ = [
    "Listener",
    "LookupFailed",
    "accepted_by",
    "anyone_listening",
    "find_listeners",
    "find_listeners_async",
    "format_address",
    "map_inodes",
    "pids_holding",
    "pids_listening",
]
