"""Where one sidecar serves (SPEC 11.2): its configured port, a free one chosen at its first
launch (`port = "auto"`), or a free one it moved to because a stranger holds its own
(`reclaim.foreign = "relocate"`). The choice is kept while the daemon runs, across restarts."""

from __future__ import annotations

import socket

from structlog.typing import FilteringBoundLogger

from supervisor.config import ForeignAction, SidecarConfig
from supervisor.reconcile.classify import Verdict
from supervisor.reconcile.preflight import Action, Outcome
from supervisor.sidecar import inherit
from supervisor.system import workers


def free_port(host: str) -> int:
    """A port free on `host` now (the kernel's choice for a bind to port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def should_relocate(config: SidecarConfig, outcome: Outcome) -> bool:
    """The preflight left a stranger (foreign) on the port, and the config says move."""
    return (
        outcome.action is Action.WAIT
        and outcome.verdict is Verdict.FOREIGN
        and config.reclaim.foreign is ForeignAction.RELOCATE
    )


async def take_free_port(
    config: SidecarConfig, sockets: inherit.Sockets
) -> tuple[int, inherit.ListenSocket | None]:
    """A free port for `config`'s sidecar. With socket.inherit the daemon binds port 0 itself
    and keeps the socket, so no stranger can take the port between the choice and the spawn.

    Raises BindError (a host that is no local address, ...)."""
    if config.socket.inherit:
        listen = await sockets.acquire(config.name, config.host, 0)
        return listen.port, listen
    try:
        return await workers.run_sync(free_port, config.host), None
    except OSError as exc:
        reason = f"cannot choose a port on {config.host}: {exc.strerror or exc}"
        raise inherit.BindError(config.host, reason, in_use=False) from None


async def relocate(
    config: SidecarConfig,
    sockets: inherit.Sockets,
    port: int,
    outcome: Outcome,
    log: FilteringBoundLogger,
) -> int | None:
    """The port to move to, when the preflight's outcome asks for it (a stranger holds `port`
    and reclaim.foreign = "relocate"); else None. The stranger is never touched."""
    if not should_relocate(config, outcome):
        return None
    try:
        new_port, _ = await take_free_port(config, sockets)
    except inherit.BindError as exc:
        log.error("sidecar_relocate_failed", port=port, error=str(exc))
        return None
    return new_port
