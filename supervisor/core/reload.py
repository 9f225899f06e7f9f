"""What a reload changes (pure): sidecars added, removed, changed or left as they are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from supervisor.config import SidecarConfig


@dataclass(frozen=True)
class ReloadPlan:
    added: tuple[str, ...]  # in the new config only: started
    removed: tuple[str, ...]  # in the old config only: stopped
    changed: tuple[str, ...]  # in both, configured differently: stopped, then started anew
    unchanged: tuple[str, ...]  # in both, the same: untouched (same pid)

    @property
    def to_stop(self) -> tuple[str, ...]:
        return self.removed + self.changed

    @property
    def to_start(self) -> tuple[str, ...]:
        return self.added + self.changed


def plan_reload(old: Sequence[SidecarConfig], new: Sequence[SidecarConfig]) -> ReloadPlan:
    """Names in config order: the old config's for `removed`, the new one's for the rest."""
    before = {s.name: s for s in old}
    after = {s.name: s for s in new}
    return ReloadPlan(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and before[n] != after[n]),
        unchanged=tuple(n for n in after if n in before and before[n] == after[n]),
    )
