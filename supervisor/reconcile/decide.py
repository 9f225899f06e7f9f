"""Who gets killed, as a table (pure): the holders' verdicts, the reclaim policy and the kind
of launch -> one action for the whole set of holders (SPEC 5.3).

The rules, in order (the first that applies decides):

0. No holder: launch.
1. The set rule: one holder we must not touch protects them all. A foreign holder, or an
   orphan under `reclaim.orphan = "leave"`, makes the sidecar wait (`fail` under
   `reclaim.foreign = "fail"`); nobody is killed and no consent is asked for a kill that could
   not happen anyway.
2. Rule 0: a current child of this very daemon (or of its session) is never killed, not even
   with consent: wait.
3. A live or unproven holder is killed only with consent, and consent is asked only where the
   launch kind may ask (`may_ask`) and the policy allows it (`reclaim.live = "ask"`; for an
   unproven one also `reclaim.orphan = "kill"`): ask, then kill the whole set. Otherwise wait
   (never fail: it may be ours).
4. Only orphans are left: kill them silently, then launch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from supervisor.config import ForeignAction, LiveAction, OrphanAction, ReclaimConfig
from supervisor.reconcile.classify import Classification, Verdict


class LaunchKind(StrEnum):
    """Why a sidecar is being launched: the one answer to "may we ask for consent?"."""

    BOOT = "boot"  # the daemon's first launch of it
    REQUEST = "request"  # start/restart NAME, SIGUSR1
    RELOAD = "reload"  # added or changed by a reload (SIGHUP)
    RESTART = "restart"  # after a crash, a health failure or a wait: nobody is watching
    UNATTENDED = "unattended"  # any launch of a daemon run with --non-interactive


ASKING_KINDS = frozenset({LaunchKind.BOOT, LaunchKind.REQUEST, LaunchKind.RELOAD})


def may_ask(kind: LaunchKind) -> bool:
    """A person (or the consent command) may be asked only at a launch somebody caused now."""
    return kind in ASKING_KINDS


def launch_kind(kind: LaunchKind, *, unattended: bool) -> LaunchKind:
    """What a launch is for the rules above: any launch of a daemon run with --non-interactive
    is unattended, whatever caused it."""
    return LaunchKind.UNATTENDED if unattended else kind


class Act(StrEnum):
    LAUNCH = "launch"  # nothing in the way
    WAIT = "wait"  # until the port is free (or the holder's supervisor exits)
    FAIL = "fail"  # give up: reclaim.foreign = "fail"
    KILL = "kill"  # kill every holder silently, then launch
    ASK = "ask"  # ask consent for each of `ask`; all granted: kill every holder, then launch


@dataclass(frozen=True)
class Action:
    act: Act
    # WAIT/FAIL: the holder the decision rests on (an index into the classifications).
    blocker: int | None = None
    # ASK: the holders whose kill needs consent, in order.
    ask: tuple[int, ...] = ()
    # KILL/ASK: every holder, killed in this order (once consent is granted).
    kill: tuple[int, ...] = ()


def decide(
    classifications: Sequence[Classification], reclaim: ReclaimConfig, launch: LaunchKind
) -> Action:
    """The action for a port held by `classifications` (one per holder). See the module doc."""
    if not classifications:
        return Action(Act.LAUNCH)
    keep = Act.FAIL if reclaim.foreign is ForeignAction.FAIL else Act.WAIT
    leave_orphans = reclaim.orphan is OrphanAction.LEAVE
    for index, item in enumerate(classifications):
        if item.verdict is Verdict.FOREIGN or (item.verdict is Verdict.ORPHAN and leave_orphans):
            return Action(keep, blocker=index)
    for index, item in enumerate(classifications):
        if item.current_sidecar is not None:
            return Action(Act.WAIT, blocker=index)
    asks = tuple(
        index
        for index, item in enumerate(classifications)
        if item.verdict in (Verdict.LIVE, Verdict.UNPROVEN)
    )
    everyone = tuple(range(len(classifications)))
    if not asks:
        return Action(Act.KILL, kill=everyone)
    for index in asks:
        if not _may_ask_for(classifications[index].verdict, reclaim, launch):
            return Action(Act.WAIT, blocker=index)
    return Action(Act.ASK, ask=asks, kill=everyone)


def _may_ask_for(verdict: Verdict, reclaim: ReclaimConfig, launch: LaunchKind) -> bool:
    if not may_ask(launch) or reclaim.live is LiveAction.LEAVE:
        return False
    # An unproven holder is at best an orphan of ours: where even proven orphans are left, so
    # is it.
    return verdict is not Verdict.UNPROVEN or reclaim.orphan is OrphanAction.KILL
