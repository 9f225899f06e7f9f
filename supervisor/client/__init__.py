"""The public Python API of sidecar-supervisor: connect to a running daemon (by state dir, by
config, or the one the registry lists) or launch one, then status, wait, start/stop/restart NAME
and events; blocking (`Client`) or async on anyio (`AsyncClient`). See docs/control.md.

    from supervisor.client import Client

    with Client.launch("/tmp/myapp/state", config="supervisor.toml") as sup:
        (dashboard,) = sup.wait("dashboard", timeout_s=30)
        print(dashboard.url)
        sup.restart("dashboard")

Errors are SupervisorError subclasses with fields (re-exported here). `AsyncClient` is loaded on
first use, so blocking users never import anyio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.client.launch import LaunchOptions
from supervisor.client.records import ActionResult, DaemonInfo, Event, Sidecar, Status
from supervisor.client.sync import Client
from supervisor.control.client import RunningDaemon, discover
from supervisor.core.lifecycle import State
from supervisor.errors import (
    AlreadyRunningError,
    ControlError,
    LaunchFailedError,
    NoAnswerError,
    NotRunningError,
    RequestRefusedError,
    SeveralRunningError,
    SidecarDownError,
    SupervisorError,
    UnknownSidecarError,
    WaitTimeoutError,
)

if TYPE_CHECKING:
    from supervisor.client.aio import AsyncClient, AsyncConnection

__all__ = [
    "ActionResult",
    "AlreadyRunningError",
    "AsyncClient",
    "AsyncConnection",
    "Client",
    "ControlError",
    "DaemonInfo",
    "Event",
    "LaunchFailedError",
    "LaunchOptions",
    "NoAnswerError",
    "NotRunningError",
    "RequestRefusedError",
    "RunningDaemon",
    "SeveralRunningError",
    "Sidecar",
    "SidecarDownError",
    "State",
    "Status",
    "SupervisorError",
    "UnknownSidecarError",
    "WaitTimeoutError",
    "discover",
]


def __getattr__(name: str) -> object:
    if name in ("AsyncClient", "AsyncConnection"):
        from supervisor.client import aio

        return getattr(aio, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
