"""The truth table of who gets killed (decide.decide, pure): every verdict x reclaim policy x
launch kind, the set rule and rule 0. Each row is written out: changing a decision fails a row."""

from __future__ import annotations

from itertools import product

import pytest

from supervisor.config import ForeignAction, LiveAction, OrphanAction, ReclaimConfig
from supervisor.reconcile.classify import Classification, Verdict
from supervisor.reconcile.decide import Act, Action, LaunchKind, decide, may_ask

HOLDERS = {
    "foreign": Classification(Verdict.FOREIGN, "not ours"),
    "orphan": Classification(Verdict.ORPHAN, "ours, its supervisor is gone"),
    "live": Classification(Verdict.LIVE, "ours, its supervisor runs"),
    "unproven": Classification(Verdict.UNPROVEN, "it matches the marker only"),
    # Rule 0: a current child of this very daemon (classify sets current_sidecar).
    "rule0": Classification(Verdict.LIVE, "this daemon runs it now", current_sidecar="other"),
}

# May a launch of this kind ask for consent?
ASKS = {
    LaunchKind.BOOT: True,
    LaunchKind.REQUEST: True,
    LaunchKind.RELOAD: True,
    LaunchKind.RESTART: False,
    LaunchKind.UNATTENDED: False,
}

# One holder: verdict, reclaim.orphan, reclaim.live, reclaim.foreign, may the launch ask -> act.
# reclaim.foreign = "relocate" keeps the holder as "wait" does (the rows after the "fail" ones):
# the sidecar loop then moves to a free port when the kept holder is foreign (sidecar/ports.py).
TABLE = """
foreign  kill  ask   wait yes  wait
foreign  kill  ask   wait no   wait
foreign  kill  ask   fail yes  fail
foreign  kill  ask   fail no   fail
foreign  kill  leave wait yes  wait
foreign  kill  leave wait no   wait
foreign  kill  leave fail yes  fail
foreign  kill  leave fail no   fail
foreign  leave ask   wait yes  wait
foreign  leave ask   wait no   wait
foreign  leave ask   fail yes  fail
foreign  leave ask   fail no   fail
foreign  leave leave wait yes  wait
foreign  leave leave wait no   wait
foreign  leave leave fail yes  fail
foreign  leave leave fail no   fail
orphan   kill  ask   wait yes  kill
orphan   kill  ask   wait no   kill
orphan   kill  ask   fail yes  kill
orphan   kill  ask   fail no   kill
orphan   kill  leave wait yes  kill
orphan   kill  leave wait no   kill
orphan   kill  leave fail yes  kill
orphan   kill  leave fail no   kill
orphan   leave ask   wait yes  wait
orphan   leave ask   wait no   wait
orphan   leave ask   fail yes  fail
orphan   leave ask   fail no   fail
orphan   leave leave wait yes  wait
orphan   leave leave wait no   wait
orphan   leave leave fail yes  fail
orphan   leave leave fail no   fail
live     kill  ask   wait yes  ask
live     kill  ask   wait no   wait
live     kill  ask   fail yes  ask
live     kill  ask   fail no   wait
live     kill  leave wait yes  wait
live     kill  leave wait no   wait
live     kill  leave fail yes  wait
live     kill  leave fail no   wait
live     leave ask   wait yes  ask
live     leave ask   wait no   wait
live     leave ask   fail yes  ask
live     leave ask   fail no   wait
live     leave leave wait yes  wait
live     leave leave wait no   wait
live     leave leave fail yes  wait
live     leave leave fail no   wait
unproven kill  ask   wait yes  ask
unproven kill  ask   wait no   wait
unproven kill  ask   fail yes  ask
unproven kill  ask   fail no   wait
unproven kill  leave wait yes  wait
unproven kill  leave wait no   wait
unproven kill  leave fail yes  wait
unproven kill  leave fail no   wait
unproven leave ask   wait yes  wait
unproven leave ask   wait no   wait
unproven leave ask   fail yes  wait
unproven leave ask   fail no   wait
unproven leave leave wait yes  wait
unproven leave leave wait no   wait
unproven leave leave fail yes  wait
unproven leave leave fail no   wait
rule0    kill  ask   wait yes  wait
rule0    kill  ask   wait no   wait
rule0    kill  ask   fail yes  wait
rule0    kill  ask   fail no   wait
rule0    kill  leave wait yes  wait
rule0    kill  leave wait no   wait
rule0    kill  leave fail yes  wait
rule0    kill  leave fail no   wait
rule0    leave ask   wait yes  wait
rule0    leave ask   wait no   wait
rule0    leave ask   fail yes  wait
rule0    leave ask   fail no   wait
rule0    leave leave wait yes  wait
rule0    leave leave wait no   wait
rule0    leave leave fail yes  wait
rule0    leave leave fail no   wait
foreign  kill  ask   relocate yes  wait
foreign  kill  ask   relocate no   wait
foreign  kill  leave relocate yes  wait
foreign  kill  leave relocate no   wait
foreign  leave ask   relocate yes  wait
foreign  leave ask   relocate no   wait
foreign  leave leave relocate yes  wait
foreign  leave leave relocate no   wait
orphan   kill  ask   relocate yes  kill
orphan   kill  ask   relocate no   kill
orphan   kill  leave relocate yes  kill
orphan   kill  leave relocate no   kill
orphan   leave ask   relocate yes  wait
orphan   leave ask   relocate no   wait
orphan   leave leave relocate yes  wait
orphan   leave leave relocate no   wait
live     kill  ask   relocate yes  ask
live     kill  ask   relocate no   wait
live     kill  leave relocate yes  wait
live     kill  leave relocate no   wait
live     leave ask   relocate yes  ask
live     leave ask   relocate no   wait
live     leave leave relocate yes  wait
live     leave leave relocate no   wait
unproven kill  ask   relocate yes  ask
unproven kill  ask   relocate no   wait
unproven kill  leave relocate yes  wait
unproven kill  leave relocate no   wait
unproven leave ask   relocate yes  wait
unproven leave ask   relocate no   wait
unproven leave leave relocate yes  wait
unproven leave leave relocate no   wait
rule0    kill  ask   relocate yes  wait
rule0    kill  ask   relocate no   wait
rule0    kill  leave relocate yes  wait
rule0    kill  leave relocate no   wait
rule0    leave ask   relocate yes  wait
rule0    leave ask   relocate no   wait
rule0    leave leave relocate yes  wait
rule0    leave leave relocate no   wait
"""


def _rows() -> dict[tuple[str, str, str, str, bool], Act]:
    rows = {}
    for line in TABLE.strip().splitlines():
        verdict, orphan, live, foreign, asks, act = line.split()
        rows[verdict, orphan, live, foreign, asks == "yes"] = Act(act)
    return rows


ROWS = _rows()


def test_the_table_has_every_row_once() -> None:
    expected = len(HOLDERS) * len(OrphanAction) * len(LiveAction) * len(ForeignAction) * 2
    assert len(TABLE.strip().splitlines()) == len(ROWS) == expected


def test_every_launch_kind_is_in_the_ask_table() -> None:
    assert set(ASKS) == set(LaunchKind)
    assert {kind: may_ask(kind) for kind in LaunchKind} == ASKS


CASES = list(product(HOLDERS, OrphanAction, LiveAction, ForeignAction, LaunchKind))


@pytest.mark.parametrize(
    ("verdict", "orphan", "live", "foreign", "launch"),
    CASES,
    ids=["-".join(str(part) for part in case) for case in CASES],
)
def test_one_holder(
    verdict: str,
    orphan: OrphanAction,
    live: LiveAction,
    foreign: ForeignAction,
    launch: LaunchKind,
) -> None:
    reclaim = ReclaimConfig(orphan=orphan, live=live, foreign=foreign)
    action = decide([HOLDERS[verdict]], reclaim, launch)
    expected = ROWS[verdict, orphan.value, live.value, foreign.value, ASKS[launch]]
    assert action.act is expected
    match expected:
        case Act.WAIT | Act.FAIL:
            assert action == Action(expected, blocker=0)
        case Act.ASK:
            assert action == Action(Act.ASK, ask=(0,), kill=(0,))
        case Act.KILL:
            assert action == Action(Act.KILL, kill=(0,))
        case Act.LAUNCH:
            raise AssertionError("a held port never launches at once")


DEFAULT = ReclaimConfig()
FAIL = ReclaimConfig(foreign=ForeignAction.FAIL)

# Several holders: the set rule (one holder we must not touch protects them all), rule 0, and
# the order of consent and kills.
SETS: list[tuple[str, list[str], ReclaimConfig, LaunchKind, Action]] = [
    ("no holder: launch", [], DEFAULT, LaunchKind.BOOT, Action(Act.LAUNCH)),
    ("no holder, unattended", [], DEFAULT, LaunchKind.RESTART, Action(Act.LAUNCH)),
    (
        "orphans only: all killed",
        ["orphan", "orphan"],
        DEFAULT,
        LaunchKind.RESTART,
        Action(Act.KILL, kill=(0, 1)),
    ),
    (
        "a foreign holder protects an orphan",
        ["orphan", "foreign"],
        DEFAULT,
        LaunchKind.BOOT,
        Action(Act.WAIT, blocker=1),
    ),
    (
        "a foreign holder protects an orphan: fail",
        ["orphan", "foreign"],
        FAIL,
        LaunchKind.BOOT,
        Action(Act.FAIL, blocker=1),
    ),
    (
        "a foreign holder: no consent asked for the live one",
        ["live", "foreign"],
        DEFAULT,
        LaunchKind.BOOT,
        Action(Act.WAIT, blocker=1),
    ),
    (
        "a left orphan protects the others",
        ["orphan", "live"],
        ReclaimConfig(orphan=OrphanAction.LEAVE),
        LaunchKind.BOOT,
        Action(Act.WAIT, blocker=0),
    ),
    (
        "the foreign holder wins over rule 0 (named first)",
        ["rule0", "foreign"],
        FAIL,
        LaunchKind.BOOT,
        Action(Act.FAIL, blocker=1),
    ),
    (
        "rule 0 protects an orphan",
        ["orphan", "rule0"],
        DEFAULT,
        LaunchKind.BOOT,
        Action(Act.WAIT, blocker=1),
    ),
    (
        "rule 0 protects a live one: nobody asked",
        ["live", "rule0"],
        DEFAULT,
        LaunchKind.BOOT,
        Action(Act.WAIT, blocker=1),
    ),
    (
        "orphan and live, interactive: ask for the live one, kill both",
        ["orphan", "live"],
        DEFAULT,
        LaunchKind.REQUEST,
        Action(Act.ASK, ask=(1,), kill=(0, 1)),
    ),
    (
        "orphan and live, unattended: wait on the live one, kill nobody",
        ["orphan", "live"],
        DEFAULT,
        LaunchKind.RESTART,
        Action(Act.WAIT, blocker=1),
    ),
    (
        "live and unproven, interactive: ask for both, in order",
        ["unproven", "orphan", "live"],
        DEFAULT,
        LaunchKind.RELOAD,
        Action(Act.ASK, ask=(0, 2), kill=(0, 1, 2)),
    ),
    (
        "unproven beside an orphan, unattended: wait, the orphan is not killed either",
        ["orphan", "unproven"],
        DEFAULT,
        LaunchKind.UNATTENDED,
        Action(Act.WAIT, blocker=1),
    ),
    (
        "unproven under orphan = leave is never asked about",
        ["live", "unproven"],
        ReclaimConfig(orphan=OrphanAction.LEAVE),
        LaunchKind.BOOT,
        Action(Act.WAIT, blocker=1),
    ),
]


@pytest.mark.parametrize(
    ("holders", "reclaim", "launch", "expected"),
    [case[1:] for case in SETS],
    ids=[case[0] for case in SETS],
)
def test_a_set_of_holders(
    holders: list[str], reclaim: ReclaimConfig, launch: LaunchKind, expected: Action
) -> None:
    assert decide([HOLDERS[h] for h in holders], reclaim, launch) == expected
