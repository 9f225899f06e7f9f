"""Pure verdict on a port holder (SPEC 5.2): foreign, orphan, live or unproven, from evidence.

Each verdict's reason names the evidence it rests on (SPEC 11.1): `spawn record` (the ledger
proves that very process, a living ancestor of it, or the living leader of its session or
group), `tag` (the env tags), `adopted` (this daemon is its subreaper), `marker only`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from supervisor.evidence.tags import OwnerTag


class Verdict(StrEnum):
    FOREIGN = "foreign"  # not ours: never signalled
    ORPHAN = "orphan"  # a leftover of ours: killed silently
    LIVE = "live"  # ours and in use: killed only with consent
    # It matches the marker only (no record, no tag): maybe ours, maybe a copy the user started
    # by hand. Never killed silently: asked at an interactive launch, else waited on.
    UNPROVEN = "unproven"


class OwnerState(StrEnum):
    NONE = "none"  # no owner tag readable
    SELF = "self"  # the tag names this very daemon
    GONE = "gone"  # the named owner no longer exists (or its pid was recycled)
    ALIVE = "alive"  # the named owner runs


@dataclass(frozen=True)
class Evidence:
    pid: int | None
    uid: int | None
    command: str
    ppid: int | None
    sidecar_tag: str | None  # SUPERVISOR_SIDECAR from the holder's env; None if unreadable/absent
    owner_state: OwnerState  # resolved by the I/O shell from SUPERVISOR_OWNER
    supervisor_ancestor: bool  # a running supervisor daemon among the holder's ancestors
    pidfile_match: bool = False  # annotation only: never changes the verdict
    # Rule 0: the sidecar of this very daemon whose current child (or its session) it is.
    current_sidecar: str | None = None
    # The spawn ledger: the sidecar of the entry this process is (or is in the session of),
    # and that entry's daemon resolved like an owner tag. As strong as the tags; it survives
    # servers that clobber their command line and environment.
    ledger_sidecar: str | None = None
    ledger_owner: OwnerState = OwnerState.NONE
    # The daemon that started it (by the ledger, else the tag): a waiting sidecar watches it.
    owner: OwnerTag | None = None
    # This very daemon is its parent as subreaper, and did not fork it: it descends from one
    # of our children (reaper.adopted), whatever it renamed or wherever it moved.
    adopted: bool = False
    # The kernel's word (cgroups.py): the sidecar of this state dir whose cgroup it is in, and
    # whether this daemon runs that sidecar now. Nothing leaves its cgroup: the strongest proof.
    cgroup_sidecar: str | None = None
    cgroup_running: bool = False


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    reason: str
    # Set by rule 0: a process of this daemon's own sidecar; never killed, not even with consent.
    current_sidecar: str | None = None


MARKER_ONLY = "matches the marker only"


def _by_cgroup(sidecar: str, *, running: bool) -> Classification:
    """In a cgroup of this state dir: ours, whatever its uid, title or session."""
    if running:
        return Classification(
            Verdict.LIVE,
            f"it is in the cgroup of sidecar {sidecar!r} of this very daemon, which runs it now",
            current_sidecar=sidecar,
        )
    return Classification(
        Verdict.ORPHAN,
        f"it is in the cgroup of sidecar {sidecar!r} of this state dir, which no daemon runs "
        "now (by its cgroup)",
    )


def classify(evidence: Evidence, *, name: str, marker: str, our_uid: int) -> Classification:
    """SPEC 5.2. An empty `marker` matches nothing (it would otherwise match every command)."""
    if evidence.cgroup_sidecar is not None:
        return _by_cgroup(evidence.cgroup_sidecar, running=evidence.cgroup_running)
    if evidence.current_sidecar is not None:
        return Classification(
            Verdict.LIVE,
            f"it belongs to sidecar {evidence.current_sidecar!r} of this very daemon, "
            "which runs it now",
            current_sidecar=evidence.current_sidecar,
        )
    if evidence.uid is not None and evidence.uid != our_uid:
        return Classification(
            Verdict.FOREIGN, f"it belongs to another user (uid {evidence.uid}, we are {our_uid})"
        )
    if evidence.pid is None or evidence.uid is None:
        return Classification(Verdict.FOREIGN, "the process holding it could not be identified")
    marked = bool(marker) and marker in evidence.command
    tagged = bool(name) and evidence.sidecar_tag == name
    recorded = bool(name) and evidence.ledger_sidecar == name
    if recorded and evidence.ledger_owner is not OwnerState.NONE:
        return _by_owner(evidence.ledger_owner, "by its spawn record")
    if evidence.adopted:
        return Classification(
            Verdict.ORPHAN,
            "adopted by this very daemon (its subreaper): a leftover of one of its children",
        )
    owned_tag = marked and evidence.owner_state is not OwnerState.NONE
    if tagged or owned_tag:
        if evidence.owner_state is not OwnerState.NONE:
            return _by_owner(evidence.owner_state, "by its tag")
        return _untagged_owner(evidence)
    if marked:
        return Classification(
            Verdict.UNPROVEN,
            f"it {MARKER_ONLY} {marker!r} (no spawn record, no tag): not proven ours; it may "
            "be a copy started by hand",
        )
    command_part = f"its command lacks the marker {marker!r}" if marker else "no marker was given"
    env_part = (
        f"its environment lacks SUPERVISOR_SIDECAR={name}"
        if name
        else "it carries no SUPERVISOR_SIDECAR tag"
    )
    return Classification(
        Verdict.FOREIGN, f"{command_part}, {env_part}, and no spawn record proves it ours"
    )


def _by_owner(owner: OwnerState, source: str) -> Classification:
    match owner:
        case OwnerState.SELF:
            return Classification(
                Verdict.ORPHAN, f"it was started by this very daemon earlier ({source})"
            )
        case OwnerState.GONE:
            return Classification(
                Verdict.ORPHAN, f"the supervisor that started it is gone ({source})"
            )
        case OwnerState.ALIVE:
            return Classification(
                Verdict.LIVE, f"the supervisor that started it still runs ({source})"
            )
        case OwnerState.NONE:
            raise ValueError("no owner to judge by")
        case _:
            assert_never(owner)


def _untagged_owner(evidence: Evidence) -> Classification:
    """Its SUPERVISOR_SIDECAR tag is ours, but no SUPERVISOR_OWNER names its daemon."""
    if evidence.supervisor_ancestor:
        return Classification(
            Verdict.LIVE, "by its tag; a running supervisor daemon is among its ancestors"
        )
    if evidence.ppid == 1:
        return Classification(
            Verdict.ORPHAN, "by its tag; no owner tag, and its parent is gone (ppid 1)"
        )
    return Classification(
        Verdict.LIVE, f"by its tag; no owner tag, and it has a living parent (ppid {evidence.ppid})"
    )
