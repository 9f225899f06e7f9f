"""Controlling a running daemon: finding it, signalling it, and its control socket.

`client` is what commands use (light: no anyio, no psutil on Linux); `server`, `actions` and
`events` run inside the daemon; `protocol` is the pure message format between them.

The names below are the commands' face, loaded on first use (PEP 562): the daemon imports
`control.events` on its way to the first spawn and needs none of the client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


def __getattr__(name: str) -> object:
    if name == "Command":
        from supervisor.control import protocol

        return protocol.Command
    if name in __all__:
        from supervisor.control import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
