"""Controlling a running daemon: finding it, reading its status, signalling it."""

from supervisor.control.client import (
    ReloadResult,
    RunningDaemon,
    find_daemon,
    read_status,
    reload,
    resolve_state_dir,
    send,
    stop,
)

__all__ = [
    "ReloadResult",
    "RunningDaemon",
    "find_daemon",
    "read_status",
    "reload",
    "resolve_state_dir",
    "send",
    "stop",
]
