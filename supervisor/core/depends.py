"""Dependencies between sidecars (pure): whether a dependent may start
(`depends_on = { NAME = "started" | "ready" | ... }`) and what it waits for. The graph itself
(cycles, start and stop order) is core/graph.py, which config validation uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from supervisor.config.schema import Condition
from supervisor.core.lifecycle import State


@dataclass(frozen=True)
class Facts:
    """What a dependency is now, as far as its dependents care."""

    state: State
    running: bool = False  # a child of it is alive (spawned, not yet exited)
    healthy: bool = False  # ready, and a health check (or watchdog ping) passed since


def met(condition: Condition, facts: Facts) -> bool:
    match condition:
        case Condition.STARTED:
            return facts.state is State.COMPLETED or (
                facts.running and facts.state in (State.STARTING, State.READY)
            )
        case Condition.READY:
            return facts.state is State.READY
        case Condition.HEALTHY:
            return facts.state is State.READY and facts.healthy
        case Condition.COMPLETED:
            return facts.state is State.COMPLETED


# A dependency in one of these states stays so until someone acts (or, in `waiting`, until a
# port is freed): its dependents have reached an outcome too (they wait).
SETTLED = frozenset({State.FAILED, State.EXITED, State.WAITING, State.COMPLETED, State.READY})


@dataclass(frozen=True)
class Blocker:
    """The first unmet dependency of a sidecar."""

    dependency: str
    condition: Condition
    state: State | None  # None: no such sidecar runs (a reload in progress)
    reason_detail: str | None = None  # the dependency's own reason (why it fails or waits)

    @property
    def settled(self) -> bool:
        """The dependency reached an outcome that does not meet the condition: the dependent's
        launch has an outcome too (it waits), for READY=1 and `reload --wait`."""
        return self.state is None or self.state in SETTLED

    @property
    def reason(self) -> str:
        now = "is not running" if self.state is None else f"is {self.state.value}"
        detail = f": {self.reason_detail}" if self.reason_detail else ""
        return f'waiting for "{self.dependency}" to be {self.condition.value} (it {now}{detail})'


def blocker(
    depends_on: Mapping[str, Condition],
    facts: Mapping[str, Facts],
    reasons: Mapping[str, str | None] | None = None,
) -> Blocker | None:
    """The first dependency (in the order written) whose condition does not hold, or None."""
    for name, condition in depends_on.items():
        fact = facts.get(name)
        if fact is None:
            return Blocker(name, condition, None)
        if not met(condition, fact):
            detail = (reasons or {}).get(name)
            return Blocker(name, condition, fact.state, detail)
    return None
