"""The pure lifecycle: the transition table, backoff and the restart decision, from tables."""

from __future__ import annotations

import itertools

import pytest

from supervisor.config import RestartConfig, RestartPolicy
from supervisor.core.lifecycle import (
    Decision,
    Event,
    ExitInfo,
    InvalidTransition,
    State,
    backoff_delay_s,
    decide_after_exit,
    next_state,
    probe_delay_s,
)

S, E = State, Event

# Written out independently of lifecycle.TRANSITIONS: the whole state machine, one row a move.
VALID = {
    (S.STOPPED, E.LAUNCH): S.STARTING,
    (S.STARTING, E.READY): S.READY,
    (S.STARTING, E.WAIT): S.WAITING,
    (S.STARTING, E.RETRY): S.BACKOFF,
    (S.STARTING, E.GIVE_UP): S.FAILED,
    (S.STARTING, E.FINISH): S.EXITED,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.READY, E.RETRY): S.BACKOFF,
    (S.READY, E.GIVE_UP): S.FAILED,
    (S.READY, E.FINISH): S.EXITED,
    (S.READY, E.STOP): S.STOPPING,
    (S.BACKOFF, E.LAUNCH): S.STARTING,
    (S.BACKOFF, E.STOP): S.STOPPING,
    (S.WAITING, E.LAUNCH): S.STARTING,
    (S.WAITING, E.STOP): S.STOPPING,
    (S.FAILED, E.LAUNCH): S.STARTING,
    (S.FAILED, E.STOP): S.STOPPING,
    (S.EXITED, E.LAUNCH): S.STARTING,
    (S.EXITED, E.STOP): S.STOPPING,
    (S.STOPPING, E.STOPPED): S.STOPPED,
    # v3: one-shot tasks complete; a launch first waits for the sidecar's dependencies.
    (S.STARTING, E.COMPLETE): S.COMPLETED,
    (S.READY, E.COMPLETE): S.COMPLETED,
    (S.COMPLETED, E.LAUNCH): S.STARTING,
    (S.COMPLETED, E.STOP): S.STOPPING,
    (S.STOPPED, E.DEPEND): S.WAITING,
    (S.BACKOFF, E.DEPEND): S.WAITING,
    (S.WAITING, E.DEPEND): S.WAITING,
    (S.FAILED, E.DEPEND): S.WAITING,
    (S.EXITED, E.DEPEND): S.WAITING,
    (S.COMPLETED, E.DEPEND): S.WAITING,
}
INVALID = [pair for pair in itertools.product(State, Event) if pair not in VALID]


@pytest.mark.parametrize(("pair", "expected"), VALID.items(), ids=str)
def test_valid_transition(pair: tuple[State, Event], expected: State) -> None:
    assert next_state(*pair) is expected


@pytest.mark.parametrize("pair", INVALID, ids=str)
def test_invalid_transition_raises(pair: tuple[State, Event]) -> None:
    with pytest.raises(InvalidTransition, match=f"{pair[1]} is not valid in state {pair[0]}"):
        next_state(*pair)


def test_every_state_can_be_stopped_or_is_stopping() -> None:
    for state in State:
        if state in (S.STOPPING, S.STOPPED):
            continue
        assert next_state(state, E.STOP) is S.STOPPING


@pytest.mark.parametrize(
    ("restart_number", "base", "maximum", "expected"),
    [
        (1, 1.0, 30.0, 1.0),
        (2, 1.0, 30.0, 2.0),
        (3, 1.0, 30.0, 4.0),
        (5, 1.0, 30.0, 16.0),
        (6, 1.0, 30.0, 30.0),  # 32 clamped
        (7, 1.0, 30.0, 30.0),
        (1, 0.05, 0.2, 0.05),
        (3, 0.05, 0.2, 0.2),
        (1, 0.0, 30.0, 0.0),
        (64, 1.0, 30.0, 30.0),
        (65, 1.0, 30.0, 30.0),  # past 2**63: no overflow, still the clamp
        (10_000, 1.0, 30.0, 30.0),
        (10_000, 0.0, 30.0, 0.0),
        (3, 5.0, 5.0, 5.0),
    ],
)
def test_backoff_doubles_and_clamps(
    restart_number: int, base: float, maximum: float, expected: float
) -> None:
    assert backoff_delay_s(restart_number, base, maximum) == expected


@pytest.mark.parametrize("restart_number", [0, -1])
def test_backoff_restart_numbers_start_at_one(restart_number: int) -> None:
    with pytest.raises(ValueError, match="start at 1"):
        backoff_delay_s(restart_number, 1.0, 30.0)


CLEAN = ExitInfo(code=0, signal=None, failed_start=False)
CRASHED = ExitInfo(code=1, signal=None, failed_start=False)
KILLED = ExitInfo(code=None, signal=9, failed_start=False)
FAILED_START_EXIT_0 = ExitInfo(code=0, signal=None, failed_start=True)  # stopped at ready.timeout
FAILED_START_EXIT_1 = ExitInfo(code=1, signal=None, failed_start=True)
NOT_SPAWNED = ExitInfo(code=None, signal=None, failed_start=True)  # command not found
# Stopped by us after `health.failures` failed checks: exit 0 (a SIGTERM handler), or killed.
UNHEALTHY_EXIT_0 = ExitInfo(code=0, signal=None, failed_start=False, unhealthy=True)
UNHEALTHY_KILLED = ExitInfo(code=None, signal=9, failed_start=False, unhealthy=True)
EXITS = {
    "clean": CLEAN,
    "crashed": CRASHED,
    "killed": KILLED,
    "failed start, exit 0": FAILED_START_EXIT_0,
    "failed start, exit 1": FAILED_START_EXIT_1,
    "not spawned": NOT_SPAWNED,
    "unhealthy, exit 0": UNHEALTHY_EXIT_0,
    "unhealthy, killed": UNHEALTHY_KILLED,
}
MATRIX = {
    # policy: the exits that restart (the others finish)
    RestartPolicy.ALWAYS: set(EXITS),
    RestartPolicy.ON_FAILURE: set(EXITS) - {"clean"},
    RestartPolicy.NEVER: set(),
}


@pytest.mark.parametrize("policy", list(RestartPolicy))
@pytest.mark.parametrize("exit_name", list(EXITS))
@pytest.mark.parametrize("attempts", [0, 2, 3])
def test_decide_after_exit_matrix(policy: RestartPolicy, exit_name: str, attempts: int) -> None:
    restart = RestartConfig(policy=policy, max_attempts=3, base_delay_s=1.0, max_delay_s=30.0)
    decision = decide_after_exit(restart, attempts, EXITS[exit_name])
    if exit_name not in MATRIX[policy]:
        assert decision == Decision(Event.FINISH, attempts, 0.0)
    elif attempts >= restart.max_attempts:
        assert decision == Decision(Event.GIVE_UP, attempts, 0.0)
    else:
        expected_delay = backoff_delay_s(attempts + 1, 1.0, 30.0)
        assert decision == Decision(Event.RETRY, attempts + 1, expected_delay)


@pytest.mark.parametrize("exit_info", [UNHEALTHY_EXIT_0, UNHEALTHY_KILLED], ids=str)
def test_an_unhealthy_stop_is_never_a_clean_exit(exit_info: ExitInfo) -> None:
    assert not exit_info.clean
    on_failure = RestartConfig(policy=RestartPolicy.ON_FAILURE, max_attempts=3)
    assert decide_after_exit(on_failure, 0, exit_info).event is Event.RETRY
    never = RestartConfig(policy=RestartPolicy.NEVER, max_attempts=3)
    assert decide_after_exit(never, 0, exit_info) == Decision(Event.FINISH, 0, 0.0)


@pytest.mark.parametrize("policy", list(RestartPolicy))
@pytest.mark.parametrize("attempts", [0, 2])
def test_a_program_that_cannot_run_gives_up_at_once(policy: RestartPolicy, attempts: int) -> None:
    unstartable = ExitInfo(code=None, signal=None, failed_start=True, unstartable=True)
    restart = RestartConfig(policy=policy, max_attempts=5)
    assert decide_after_exit(restart, attempts, unstartable) == Decision(
        Event.GIVE_UP, attempts, 0.0
    )


def test_a_zero_budget_gives_up_at_the_first_failure() -> None:
    restart = RestartConfig(max_attempts=0)
    assert decide_after_exit(restart, 0, CRASHED) == Decision(Event.GIVE_UP, 0, 0.0)


@pytest.mark.parametrize(
    ("elapsed_s", "interval_s", "expected"),
    [(0.0, 0.5, 0.002), (0.01, 0.5, 0.002), (0.1, 0.5, 0.01), (2.0, 0.5, 0.2), (10.0, 0.5, 0.5)],
)
def test_probe_delay_is_a_tenth_of_the_time_spent(
    elapsed_s: float, interval_s: float, expected: float
) -> None:
    assert probe_delay_s(elapsed_s, interval_s) == pytest.approx(expected)
