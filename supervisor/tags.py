"""The evidence the supervisor plants in every child's environment (SPEC 5.2), pure.

`SUPERVISOR_SIDECAR=<name>` says which sidecar a process is; `SUPERVISOR_OWNER=<pid>:<create
time>` names the daemon that spawned it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

SIDECAR_ENV = "SUPERVISOR_SIDECAR"
OWNER_ENV = "SUPERVISOR_OWNER"


@dataclass(frozen=True)
class OwnerTag:
    pid: int
    create_time: float


def format_owner_tag(pid: int, create_time: float) -> str:
    return f"{pid}:{create_time!r}"


def parse_owner_tag(text: str | None) -> OwnerTag | None:
    """`"PID:CREATE_TIME"` -> OwnerTag; anything else (absent, garbage) -> None."""
    if not text:
        return None
    pid_text, sep, time_text = text.strip().partition(":")
    if not sep or not pid_text.isdigit() or not pid_text.isascii():
        return None
    try:
        created = float(time_text)
    except ValueError:
        return None
    pid = int(pid_text)
    if pid <= 0 or not math.isfinite(created) or created < 0:
        return None
    return OwnerTag(pid, created)


def child_env(
    base: Mapping[str, str], extra: Mapping[str, str], *, sidecar: str, owner: str
) -> dict[str, str]:
    """A child's environment: the daemon's, the sidecar's `env` over it, then both tags."""
    return {**base, **extra, SIDECAR_ENV: sidecar, OWNER_ENV: owner}
