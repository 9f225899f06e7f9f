"""Controlling a running daemon: finding it, reading its status, signalling it."""

from supervisor.control.client import (
    RunningDaemon,
    find_daemon,
    read_status,
    resolve_state_dir,
    send,
    stop,
)

__all__ = ["RunningDaemon", "find_daemon", "read_status", "resolve_state_dir", "send", "stop"]
