"""What every sidecar shares with its daemon: identity, the state dir, the base environment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from supervisor.cgroups import Isolation
from supervisor.inherit import Sockets
from supervisor.ledger import Ledger
from supervisor.statedir import StateDir

if TYPE_CHECKING:
    from supervisor.sidecar import Sidecar


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
    on_change: Callable[[Sidecar], None]
    consent_lock: anyio.Lock = field(default_factory=anyio.Lock)
    # Session id -> sidecar name for every current child (the classifier's rule 0).
    current_sessions: Callable[[], Mapping[int, str]] = dict
    sockets: Sockets = field(default_factory=Sockets)  # socket.inherit: outlive every attempt
    isolation: Isolation | None = None  # a cgroup per sidecar (cgroups.py), or none
