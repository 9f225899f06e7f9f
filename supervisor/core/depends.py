"""Dependencies between sidecars (pure): the graph, its cycles, start and stop order, and
whether a dependent may start (`depends_on = { NAME = "started" | "ready" | ... }`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from supervisor.config.schema import Condition
from supervisor.core.lifecycle import State

Graph = Mapping[str, Iterable[str]]  # name -> the names it depends on


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


def find_cycle(graph: Graph) -> tuple[str, ...] | None:
    """A dependency cycle as a path that ends where it starts (`a, b, a`), or None.

    Names the graph does not define are ignored here (they are reported as unknown)."""
    edges = {name: [d for d in deps if d in graph] for name, deps in graph.items()}
    done: set[str] = set()
    for root, first in edges.items():
        if root in done:
            continue
        path: list[str] = [root]
        stack: list[Iterator[str]] = [iter(first)]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path.pop())
            elif child in path:
                return (*path[path.index(child) :], child)
            elif child not in done:
                path.append(child)
                stack.append(iter(edges[child]))
    return None


def start_order(graph: Graph, names: Sequence[str]) -> list[str]:
    """`names` ordered so that every sidecar comes after what it depends on (stable: config
    order otherwise). The graph must be acyclic (config validation sees to it)."""
    placed: list[str] = []
    seen: set[str] = set()
    wanted = set(names)

    def place(name: str, trail: frozenset[str]) -> None:
        if name in seen or name in trail:
            return
        for dep in graph.get(name, ()):  # through the ones not asked for too (transitively)
            place(dep, trail | {name})
        seen.add(name)
        if name in wanted:
            placed.append(name)

    for name in names:
        place(name, frozenset())
    return placed


def stop_order(graph: Graph, names: Sequence[str]) -> list[str]:
    """Dependents first: the reverse of `start_order`."""
    return list(reversed(start_order(graph, names)))


def needs(graph: Graph, name: str) -> list[str]:
    """Everything `name` depends on, directly or not, in start order (without `name`)."""
    found: list[str] = []

    def visit(node: str) -> None:
        for dep in graph.get(node, ()):
            if dep not in found and dep != name:
                visit(dep)
                found.append(dep)

    visit(name)
    return found


def dependents(graph: Graph, name: str) -> list[str]:
    """The sidecars that depend on `name` directly."""
    return [other for other, deps in graph.items() if name in deps]
