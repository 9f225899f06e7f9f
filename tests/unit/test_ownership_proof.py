"""What a spawn record proves (ledger.proven_by, pure) and the start-up sweep's plan (pure).

A record proves exactly one process; a process is ours if its chain of living parents reaches
it, or if it is in the session or group that process leads while that leader is alive. A
matching number after the leader died proves nothing (issue 24: a stranger's double-forked
daemon was killed after a reboot, a pid wrap or a clean stop).
"""

from __future__ import annotations

import pytest

from supervisor.evidence import ledger
from supervisor.evidence.ledger import Lineage, Spawn
from supervisor.reconcile import sweep
from supervisor.system import procs

T0 = 1767225600.25
ENTRY = Spawn(
    pid=4242,
    create_time=T0,
    boot_id="boot-a",
    sid=4242,
    pgid=4242,
    command=("server",),
    sidecar="web",
    daemon_pid=4100,
    daemon_create_time=T0 - 10,
    spawned_at="",
)
LATER = T0 + 60  # a process created after ours
LEADER = (4242, T0)  # our recorded process, alive with its very identity
STRANGER_AT_4242 = (4242, LATER)  # another process now has that pid


def lineage(
    chain: list[tuple[int, float]],
    sid: int | None = 9000,
    pgid: int | None = 9000,
    session_leader: tuple[int, float] | None = None,
    group_leader: tuple[int, float] | None = None,
) -> Lineage:
    return Lineage(tuple(chain), sid, pgid, session_leader, group_leader)


PROOF: list[tuple[str, Lineage, bool]] = [
    ("the recorded process itself", lineage([(4242, T0)], 4242, 4242, LEADER, LEADER), True),
    ("the recorded pid with a later create time", lineage([(4242, LATER)]), False),
    ("within the create-time tolerance", lineage([(4242, T0 + 0.005)]), True),
    ("a child of the living recorded process", lineage([(5000, LATER), (4242, T0)]), True),
    (
        "a grandchild through a living parent",
        lineage([(5001, LATER), (5000, LATER), (4242, T0)]),
        True,
    ),
    (
        "parent pid recycled by a stranger",
        lineage([(5000, LATER), (4242, LATER)]),
        False,
    ),
    (
        "in the session while its leader lives (a setpgid member)",
        lineage([(5000, LATER)], sid=4242, pgid=5000, session_leader=LEADER),
        True,
    ),
    (
        "in the group while its leader lives (reparented member)",
        lineage([(5000, LATER)], sid=4242, pgid=4242, group_leader=LEADER),
        True,
    ),
    # The critical bug: the session number after the leader died.
    (
        "session number of a dead leader, nothing at that pid",
        lineage([(5000, LATER)], sid=4242, pgid=5000, session_leader=None),
        False,
    ),
    (
        "session number now led by a stranger with that pid",
        lineage(
            [(5000, LATER)],
            sid=4242,
            pgid=4242,
            session_leader=STRANGER_AT_4242,
            group_leader=STRANGER_AT_4242,
        ),
        False,
    ),
    (
        "a leader identity that names another number",
        lineage([(5000, LATER)], sid=4243, session_leader=LEADER),
        False,
    ),
    ("nothing in common", lineage([(5000, LATER), (4999, LATER)]), False),
]


@pytest.mark.parametrize(
    ("facts", "proven"), [case[1:] for case in PROOF], ids=[case[0] for case in PROOF]
)
def test_what_a_spawn_record_proves(facts: Lineage, proven: bool) -> None:
    assert (ledger.proven_by(facts, [ENTRY]) == ENTRY) is proven


def test_a_record_without_a_boot_id_proves_nothing() -> None:
    record = ENTRY.record()
    assert ledger.parse(record) == ENTRY
    del record["boot_id"]
    assert ledger.parse(record) is None  # written before boot ids: its boot cannot be told


# -- the sweep's plan -------------------------------------------------------------------------


def facts(pid: int) -> procs.ProcessFacts:
    return procs.ProcessFacts(pid, 1, 1000, "me", LATER, ("x",), {})


OTHER = Spawn(**{**ENTRY.__dict__, "pid": 4300, "sid": 4300, "pgid": 4300})


def seen(
    pid: int,
    entry: Spawn | None,
    *,
    holds: bool = False,
    tagged: bool = False,
    leads: bool = False,
) -> sweep.Seen:
    return sweep.Seen(facts(pid), leads, entry, holds, tagged)


PLANS: list[tuple[str, list[sweep.Seen], list[Spawn], list[int], list[int], list[Spawn]]] = [
    # name, seen, orphaned entries -> stopped pids (in order), left pids, forgotten entries
    ("nothing seen, nothing orphaned", [], [], [], [], []),
    ("an orphaned entry whose process is gone is forgotten", [], [ENTRY], [], [], [ENTRY]),
    (
        "a proven process of a gone daemon is stopped, its entry kept",
        [seen(4242, ENTRY)],
        [ENTRY],
        [4242],
        [],
        [],
    ),
    (
        "one holding its sidecar's port is left to the preflight",
        [seen(4242, ENTRY, holds=True)],
        [ENTRY],
        [],
        [],
        [],
    ),
    (
        "a proven process of a living daemon is not touched",
        [seen(4242, ENTRY)],
        [],
        [],
        [],
        [],
    ),
    (
        "tagged by a gone daemon but not proven: reported, not stopped",
        [seen(5000, None, tagged=True)],
        [ENTRY],
        [],
        [5000],
        [ENTRY],
    ),
    (
        "group leaders are stopped first",
        [seen(5000, ENTRY), seen(4242, ENTRY, leads=True), seen(4300, OTHER, leads=True)],
        [ENTRY, OTHER],
        [4242, 4300, 5000],
        [],
        [],
    ),
]


@pytest.mark.parametrize(
    ("items", "orphaned", "stopped", "left", "done"),
    [case[1:] for case in PLANS],
    ids=[case[0] for case in PLANS],
)
def test_sweep_plan(
    items: list[sweep.Seen],
    orphaned: list[Spawn],
    stopped: list[int],
    left: list[int],
    done: list[Spawn],
) -> None:
    plan = sweep.plan(items, orphaned)
    assert [f.pid for f, _ in plan.stop] == stopped
    assert [f.pid for f in plan.left] == left
    assert plan.done == done
