"""Controlling a running daemon: finding it, signalling it, and its control socket.

`client` is what commands use (light: no anyio, no psutil on Linux); `server`, `actions` and
`events` run inside the daemon; `protocol` is the pure message format between them.
"""

from supervisor.control.client import (
    REPLY_TIMEOUT_S,
    Connection,
    ReloadResult,
    RunningDaemon,
    discover,
    find_daemon,
    read_status,
    reload,
    resolve_state_dir,
    running,
    send,
    stop,
    the_daemon,
    wait_ready,
)
from supervisor.control.protocol import Command

__all__ = [
    "REPLY_TIMEOUT_S",
    "Command",
    "Connection",
    "ReloadResult",
    "RunningDaemon",
    "discover",
    "find_daemon",
    "read_status",
    "reload",
    "resolve_state_dir",
    "running",
    "send",
    "stop",
    "the_daemon",
    "wait_ready",
]
