"""depends.py (pure): conditions, cycles, start and stop order, what a start needs."""

from __future__ import annotations

import pytest

from supervisor.config import Condition
from supervisor.core.depends import Blocker, Facts, blocker, met
from supervisor.core.graph import dependents, find_cycle, needs, start_order, stop_order
from supervisor.core.lifecycle import State

C, S = Condition, State
RUNNING_READY = Facts(S.READY, running=True)
HEALTHY = Facts(S.READY, running=True, healthy=True)

# condition, facts, met?
MET_TABLE = [
    (C.STARTED, Facts(S.STOPPED), False),
    (C.STARTED, Facts(S.WAITING), False),
    (C.STARTED, Facts(S.STARTING, running=False), False),  # preflight: nothing spawned yet
    (C.STARTED, Facts(S.STARTING, running=True), True),
    (C.STARTED, RUNNING_READY, True),
    (C.STARTED, Facts(S.BACKOFF), False),
    (C.STARTED, Facts(S.COMPLETED), True),
    (C.STARTED, Facts(S.FAILED), False),
    (C.READY, Facts(S.STARTING, running=True), False),
    (C.READY, RUNNING_READY, True),
    (C.READY, Facts(S.BACKOFF), False),
    (C.READY, Facts(S.COMPLETED), False),
    (C.READY, Facts(S.EXITED), False),
    (C.HEALTHY, RUNNING_READY, False),
    (C.HEALTHY, HEALTHY, True),
    (C.HEALTHY, Facts(S.BACKOFF, healthy=True), False),
    (C.COMPLETED, Facts(S.COMPLETED), True),
    (C.COMPLETED, Facts(S.EXITED), False),  # exited non-zero: not completed
    (C.COMPLETED, RUNNING_READY, False),
    (C.COMPLETED, Facts(S.FAILED), False),
]


@pytest.mark.parametrize(("condition", "facts", "expected"), MET_TABLE, ids=str)
def test_condition_met(condition: Condition, facts: Facts, expected: bool) -> None:
    assert met(condition, facts) is expected


def test_blocker_is_the_first_unmet_in_written_order_with_the_dependency_reason() -> None:
    facts = {"db": RUNNING_READY, "migrate": Facts(S.FAILED), "cache": Facts(S.STOPPED)}
    deps = {"db": C.READY, "migrate": C.COMPLETED, "cache": C.STARTED}
    found = blocker(deps, facts, {"migrate": "exited with code 1"})
    assert found == Blocker("migrate", C.COMPLETED, S.FAILED, "exited with code 1")
    assert found.settled
    assert found.reason == (
        'waiting for "migrate" to be completed (it is failed: exited with code 1)'
    )
    assert blocker({"db": C.READY}, facts) is None
    assert blocker({}, facts) is None


@pytest.mark.parametrize(
    ("state", "settled"),
    [(S.STARTING, False), (S.BACKOFF, False), (S.STOPPED, False), (S.FAILED, True),
     (S.EXITED, True), (S.WAITING, True), (S.READY, True), (None, True)],
)  # fmt: skip
def test_blocker_settles_with_its_dependency(state: State | None, settled: bool) -> None:
    assert Blocker("db", C.HEALTHY, state).settled is settled


def test_a_dependency_that_is_not_there_blocks() -> None:
    found = blocker({"db": C.READY}, {})
    assert found is not None and found.state is None
    assert "it is not running" in found.reason


CYCLES = [
    ({"a": ["b"], "b": ["a"]}, ("a", "b", "a")),
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, ("a", "b", "c", "a")),
    ({"x": [], "a": ["b"], "b": ["c"], "c": ["b"]}, ("b", "c", "b")),
    ({"a": ["a"]}, ("a", "a")),
    ({"a": ["b", "c"], "b": ["c"], "c": []}, None),  # a diamond is no cycle
    ({"a": ["nope"]}, None),  # unknown names are another error
    ({}, None),
]


@pytest.mark.parametrize(("graph", "cycle"), CYCLES, ids=str)
def test_find_cycle_names_it(graph: dict[str, list[str]], cycle: tuple[str, ...] | None) -> None:
    assert find_cycle(graph) == cycle


def test_start_order_puts_dependencies_first_and_keeps_config_order_otherwise() -> None:
    graph = {"dashboard": ["api"], "api": ["db", "migrate"], "migrate": ["db"], "db": [], "x": []}
    names = ["dashboard", "x", "api", "migrate", "db"]
    assert start_order(graph, names) == ["db", "migrate", "api", "dashboard", "x"]
    assert stop_order(graph, names) == ["x", "dashboard", "api", "migrate", "db"]
    # Only the names asked for are ordered.
    assert start_order(graph, ["dashboard", "db"]) == ["db", "dashboard"]


def test_needs_is_transitive_in_start_order() -> None:
    graph = {"dashboard": ["api"], "api": ["db", "migrate"], "migrate": ["db"], "db": []}
    assert needs(graph, "dashboard") == ["db", "migrate", "api"]
    assert needs(graph, "db") == []
    assert dependents(graph, "db") == ["api", "migrate"]
