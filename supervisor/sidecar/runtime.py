"""What every sidecar shares with its daemon: identity, the state dir, the base environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio

from supervisor.config import SidecarConfig
from supervisor.core.depends import Blocker
from supervisor.core.status import Observed
from supervisor.evidence.ledger import Ledger
from supervisor.sidecar.inherit import Sockets
from supervisor.system.cgroups import Isolation
from supervisor.system.statedir import StateDir


class Changes:
    """Wakes whoever waits for some sidecar's state to change (a dependency wait)."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None  # made on the event loop, when first needed

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


def _no_blocker(_config: SidecarConfig) -> Blocker | None:
    return None


@dataclass
class Runtime:
    state: StateDir
    ledger: Ledger
    our_pid: int
    our_create_time: float
    owner_tag: str  # SUPERVISOR_OWNER for our children (tags.format_owner_tag)
    base_env: Mapping[str, str]
    interactive_allowed: bool
    stdin_is_tty: bool
    on_change: Callable[[Observed], None]  # the daemon: status, events, sd_notify
    consent_lock: anyio.Lock = field(default_factory=anyio.Lock)
    # Session id -> sidecar name for every current child (the classifier's rule 0).
    current_sessions: Callable[[], Mapping[int, str]] = dict
    sockets: Sockets = field(default_factory=Sockets)  # socket.inherit: outlive every attempt
    isolation: Isolation | None = None  # a cgroup per sidecar (system/cgroups.py), or none
    # depends_on: the first unmet dependency of a sidecar, and the wake-up when any changes.
    blocker: Callable[[SidecarConfig], Blocker | None] = _no_blocker
    changes: Changes = field(default_factory=Changes)
