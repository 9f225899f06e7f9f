"""The classifier's truth table (SPEC 5.2), the owner tag format and the daemon recogniser."""

from __future__ import annotations

from dataclasses import replace

import pytest

from supervisor.evidence.tags import (
    OwnerTag,
    format_owner_tag,
    is_supervisor_daemon,
    parse_owner_tag,
)
from supervisor.reconcile.classify import (
    Evidence,
    OwnerState,
    Verdict,
    classify,
)

UID = 1000
NAME = "agent-monitor"
MARKER = "agent_monitor.server"

# A holder of ours by every measure except the facts each case changes.
BASE = Evidence(
    pid=4242,
    uid=UID,
    command=f"/usr/bin/python3 -m {MARKER} --port 45000",
    ppid=777,
    sidecar_tag=NAME,
    owner_state=OwnerState.NONE,
    supervisor_ancestor=False,
)

CASES: list[tuple[str, Evidence, Verdict]] = [
    # Rule 0: a current child of this daemon (or in its session) is never an orphan, whatever
    # else the facts say: another sidecar's ready child carries this very daemon's owner tag.
    (
        "rule 0: another sidecar's child tagged with this daemon",
        replace(BASE, owner_state=OwnerState.SELF, current_sidecar="other"),
        Verdict.LIVE,
    ),
    (
        "rule 0: this sidecar's own current child",
        replace(BASE, owner_state=OwnerState.SELF, current_sidecar=NAME),
        Verdict.LIVE,
    ),
    (
        "rule 0: owner gone and ppid 1",
        replace(BASE, owner_state=OwnerState.GONE, ppid=1, current_sidecar="other"),
        Verdict.LIVE,
    ),
    (
        "rule 0: no tag, ppid 1",
        replace(BASE, sidecar_tag=None, ppid=1, current_sidecar="other"),
        Verdict.LIVE,
    ),
    (
        "rule 0: neither marker nor tag (a session member that rewrote its argv)",
        replace(BASE, command="nginx: worker", sidecar_tag=None, current_sidecar="other"),
        Verdict.LIVE,
    ),
    (
        "rule 0: with a pid file match",
        replace(BASE, owner_state=OwnerState.SELF, pidfile_match=True, current_sidecar="other"),
        Verdict.LIVE,
    ),
    # Rule 1: another uid, or no pid.
    ("other uid", replace(BASE, uid=0, owner_state=OwnerState.GONE), Verdict.FOREIGN),
    ("unknown uid", replace(BASE, uid=None, owner_state=OwnerState.GONE), Verdict.FOREIGN),
    ("pid unknown", replace(BASE, pid=None, owner_state=OwnerState.GONE), Verdict.FOREIGN),
    (
        "other uid even with a pid file match",
        replace(BASE, uid=0, pidfile_match=True),
        Verdict.FOREIGN,
    ),
    # Rule 2: neither marker nor sidecar tag.
    (
        "no marker, no tag",
        replace(BASE, command="nginx: master", sidecar_tag=None, owner_state=OwnerState.GONE),
        Verdict.FOREIGN,
    ),
    (
        "no marker, another sidecar's tag",
        replace(BASE, command="nginx", sidecar_tag="other", ppid=1),
        Verdict.FOREIGN,
    ),
    ("marker absent but tag matches", replace(BASE, command="nginx", ppid=1), Verdict.ORPHAN),
    # Marker only (issue 24): no spawn record, no tag. Was orphan at ppid 1: the hand-started,
    # detached copy (`setsid python3 -m http.server P`) was killed silently.
    (
        "tag absent but marker present (marker only, ppid 1)",
        replace(BASE, sidecar_tag=None, ppid=1),
        Verdict.UNPROVEN,
    ),
    (
        "marker only, living parent",
        replace(BASE, sidecar_tag=None),
        Verdict.UNPROVEN,
    ),
    (
        "marker only, a supervisor ancestor",
        replace(BASE, sidecar_tag=None, supervisor_ancestor=True),
        Verdict.UNPROVEN,
    ),
    (
        "marker and a dead owner tag, another sidecar's name (by its tag)",
        replace(BASE, sidecar_tag="other", owner_state=OwnerState.GONE),
        Verdict.ORPHAN,
    ),
    # The spawn record (a sound proof: evidence.find_spawn) beats what the tags say.
    (
        "spawn record, its daemon gone, no marker, no tag",
        replace(
            BASE,
            command="redis-server *:6380",
            sidecar_tag=None,
            ledger_sidecar=NAME,
            ledger_owner=OwnerState.GONE,
        ),
        Verdict.ORPHAN,
    ),
    (
        "spawn record, its daemon alive",
        replace(BASE, ledger_sidecar=NAME, ledger_owner=OwnerState.ALIVE, ppid=1),
        Verdict.LIVE,
    ),
    (
        "spawn record of another sidecar, marker only otherwise",
        replace(BASE, sidecar_tag=None, ledger_sidecar="other", ledger_owner=OwnerState.GONE),
        Verdict.UNPROVEN,
    ),
    # Adopted by this very daemon (its subreaper): a descendant of one of our children.
    (
        "adopted, clobbered title and environment",
        replace(BASE, command="redis-server *:6380", sidecar_tag=None, adopted=True),
        Verdict.ORPHAN,
    ),
    ("adopted, other uid", replace(BASE, uid=0, adopted=True), Verdict.FOREIGN),
    # Rule 3: owner tag readable.
    ("owner is this daemon", replace(BASE, owner_state=OwnerState.SELF), Verdict.ORPHAN),
    ("owner dead or recycled", replace(BASE, owner_state=OwnerState.GONE), Verdict.ORPHAN),
    ("owner alive", replace(BASE, owner_state=OwnerState.ALIVE), Verdict.LIVE),
    ("owner alive beats ppid 1", replace(BASE, owner_state=OwnerState.ALIVE, ppid=1), Verdict.LIVE),
    (
        "pid file match with a live owner stays live",
        replace(BASE, owner_state=OwnerState.ALIVE, pidfile_match=True),
        Verdict.LIVE,
    ),
    (
        "owner gone wins over a supervisor ancestor",
        replace(BASE, owner_state=OwnerState.GONE, supervisor_ancestor=True),
        Verdict.ORPHAN,
    ),
    # Rule 4: no owner tag.
    ("no tag, supervisor ancestor", replace(BASE, supervisor_ancestor=True, ppid=1), Verdict.LIVE),
    ("no tag, ppid 1", replace(BASE, ppid=1), Verdict.ORPHAN),
    ("no tag, living parent", BASE, Verdict.LIVE),
    ("no tag, living parent, pid file match", replace(BASE, pidfile_match=True), Verdict.LIVE),
    ("no tag, ppid unknown", replace(BASE, ppid=None), Verdict.LIVE),
]


@pytest.mark.parametrize(
    ("evidence", "expected"), [(e, v) for _, e, v in CASES], ids=[c[0] for c in CASES]
)
def test_classify_truth_table(evidence: Evidence, expected: Verdict) -> None:
    result = classify(evidence, name=NAME, marker=MARKER, our_uid=UID)
    assert result.verdict is expected
    assert result.reason


@pytest.mark.parametrize(
    ("evidence", "words"),
    [
        (replace(BASE, ledger_sidecar=NAME, ledger_owner=OwnerState.GONE), "spawn record"),
        (replace(BASE, owner_state=OwnerState.GONE), "by its tag"),
        (replace(BASE, ppid=1), "by its tag"),
        (replace(BASE, sidecar_tag=None, ppid=1), "matches the marker only"),
        (replace(BASE, command="x", sidecar_tag=None, adopted=True), "subreaper"),
        (replace(BASE, command="x", sidecar_tag=None), "no spawn record proves it ours"),
    ],
    ids=["spawn record", "tag", "tag without owner", "marker only", "adopted", "foreign"],
)
def test_the_reason_names_the_evidence(evidence: Evidence, words: str) -> None:
    assert words in classify(evidence, name=NAME, marker=MARKER, our_uid=UID).reason


@pytest.mark.parametrize(
    "evidence",
    [e for label, e, _ in CASES if label.startswith("rule 0")],
    ids=[label for label, _, _ in CASES if label.startswith("rule 0")],
)
def test_rule_0_reports_the_sidecar_and_says_why(evidence: Evidence) -> None:
    result = classify(evidence, name=NAME, marker=MARKER, our_uid=UID)
    assert result.current_sidecar == evidence.current_sidecar
    assert repr(evidence.current_sidecar) in result.reason
    assert "this very daemon" in result.reason


def test_without_rule_0_no_verdict_carries_a_current_sidecar() -> None:
    for _, evidence, _ in CASES:
        if evidence.current_sidecar is None:
            result = classify(evidence, name=NAME, marker=MARKER, our_uid=UID)
            assert result.current_sidecar is None


def test_rule_0_is_what_keeps_a_current_child_from_being_an_orphan() -> None:
    # The incident: sidecar b's preflight found sidecar a's ready child (same port), read an owner
    # tag naming this very daemon and killed it as an orphan, 22 times in 6 s.
    incident = replace(BASE, owner_state=OwnerState.SELF)
    assert classify(incident, name=NAME, marker=MARKER, our_uid=UID).verdict is Verdict.ORPHAN
    guarded = replace(incident, current_sidecar="a")
    assert classify(guarded, name=NAME, marker=MARKER, our_uid=UID).verdict is Verdict.LIVE


def test_empty_marker_matches_no_command() -> None:
    evidence = replace(BASE, sidecar_tag=None, ppid=1)
    assert classify(evidence, name=NAME, marker="", our_uid=UID).verdict is Verdict.FOREIGN


def test_empty_name_never_matches_an_absent_tag() -> None:
    evidence = replace(BASE, command="nginx", sidecar_tag=None, ppid=1)
    assert classify(evidence, name="", marker=MARKER, our_uid=UID).verdict is Verdict.FOREIGN


def test_pidfile_match_never_changes_the_verdict() -> None:
    for _, evidence, _ in CASES:
        plain = classify(
            replace(evidence, pidfile_match=False), name=NAME, marker=MARKER, our_uid=UID
        )
        matched = classify(
            replace(evidence, pidfile_match=True), name=NAME, marker=MARKER, our_uid=UID
        )
        assert plain.verdict is matched.verdict


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123:1700000000.25", OwnerTag(123, 1700000000.25)),
        ("1:0.0", OwnerTag(1, 0.0)),
        ("42:1700000000", OwnerTag(42, 1700000000.0)),
        (" 42:1.5\n", OwnerTag(42, 1.5)),
        (None, None),
        ("", None),
        ("123", None),
        ("123:", None),
        (":1.5", None),
        ("abc:1.5", None),
        ("12:abc", None),
        ("-5:1.5", None),
        ("0:1.5", None),
        ("12:nan", None),
        ("12:inf", None),
        ("12:-1.0", None),
        ("1.5:2.5", None),
        ("12:1.5:3", None),
        ("١٢:1.5", None),  # non-ASCII digits
    ],
)
def test_parse_owner_tag(text: str | None, expected: OwnerTag | None) -> None:
    assert parse_owner_tag(text) == expected


@pytest.mark.parametrize("created", [0.0, 1.5, 1700000000.123456, 1761234567.89])
def test_owner_tag_round_trips(created: float) -> None:
    assert parse_owner_tag(format_owner_tag(31337, created)) == OwnerTag(31337, created)


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["supervisor", "run"], True),
        (["/home/u/.venv/bin/supervisor", "run", "-c", "x.toml"], True),
        (["/usr/bin/python3", "-m", "supervisor", "run"], True),
        (["python3.12", "-u", "-X", "dev", "-m", "supervisor", "run", "--non-interactive"], True),
        (["python3", "-msupervisor", "run"], True),
        (["python3", "-m", "supervisor.cli", "run"], True),
        (["/home/u/.venv/bin/python", "/home/u/.venv/bin/supervisor", "run"], True),
        (["supervisor", "status"], False),
        (["supervisor"], False),
        (["python3", "-m", "supervisor", "port", "45000"], False),
        (["python3", "-m", "supervisord", "run"], False),
        (["python3", "-c", "import x", "supervisor", "run"], False),
        (["/usr/bin/supervisord", "run"], False),
        (["bash", "-c", "supervisor run"], False),
        (["vim", "supervisor", "run"], False),
        (["python3", "/tmp/not-supervisor.py", "run"], False),
        ([], False),
    ],
)
def test_is_supervisor_daemon(cmdline: list[str], expected: bool) -> None:
    assert is_supervisor_daemon(cmdline) is expected
