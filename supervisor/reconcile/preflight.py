"""The reconcile preflight run before every launch: gather, decide, act (SPEC 5.3).

Gather: the holders and their evidence (`_judge`, in a worker thread), classified (pure).
Decide: `decide.decide` (pure: the verdicts, the reclaim policy, the launch kind). Act: log,
ask, kill, or say why we wait or fail.

It never raises into the launch path: any error is logged as `reconcile_failed` and the launch
proceeds to spawn.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.config import SidecarConfig
from supervisor.evidence.ledger import Ledger
from supervisor.evidence.tags import OwnerTag
from supervisor.reconcile import holders
from supervisor.reconcile.classify import Classification, Evidence, Verdict, classify
from supervisor.reconcile.decide import Act, LaunchKind, decide
from supervisor.reconcile.evidence import gather
from supervisor.reconcile.kill import KillAborted, kill_holder
from supervisor.system import net, workers

MAX_RERUNS = 3


class Action(StrEnum):
    LAUNCH = "launch"
    WAIT = "wait"
    FAIL = "fail"


@dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str | None = None
    holder_pid: int | None = None
    verdict: Verdict | None = None
    # What held the port when we decided to wait: polling compares against it so that the same
    # holder costs no process scan.
    listeners: frozenset[net.Listener] = frozenset()
    # A live holder's supervisor: when it exits, its sidecar is an orphan to reclaim.
    owner: OwnerTag | None = None


@dataclass(frozen=True)
class Context:
    our_pid: int
    our_create_time: float
    recorded_pid: Callable[[], int | None]  # the sidecar's PID file: annotation only
    stdin_is_tty: bool
    consent_lock: anyio.Lock
    should_run: Callable[[], bool]
    # Session id -> sidecar name, for the current children of this daemon (rule 0).
    current_sessions: Callable[[], Mapping[int, str]] = dict
    ledger: Ledger | None = None  # this state dir's spawn ledger (every generation)
    # The daemon's own inherited sockets (socket.inherit): never a holder to reclaim.
    own_inodes: Callable[[], frozenset[int]] = frozenset
    # Orphans this daemon adopted as their subreaper (reaper.adopted): provably ours.
    adopted: Callable[[], frozenset[int]] = frozenset
    # Says why the launch pauses while a person is asked (status shows it), then None.
    asking: Callable[[str | None], None] = lambda _why: None


@dataclass(frozen=True)
class Judged:
    holder: holders.Holder
    classification: Classification
    evidence: Evidence


def _judge(
    config: SidecarConfig,
    port: int,
    *,
    ctx: Context,
    recorded_pid: int | None,
    listeners: tuple[net.Listener, ...],
    sessions: Mapping[int, str],
) -> list[Judged]:
    """Every holder of the port with its verdict (blocking: /proc reads; run in a thread)."""
    found = [
        holder
        for holder in holders.find_holders(port, listeners)
        if holder.pid != ctx.our_pid  # the daemon holds its inherited socket: never a holder
    ]
    spawns = ctx.ledger.entries() if ctx.ledger is not None and found else []
    adopted = ctx.adopted() if found else frozenset()
    judged = []
    for holder in found:
        evidence = gather(
            holder,
            our_pid=ctx.our_pid,
            our_create_time=ctx.our_create_time,
            pidfile_pid=recorded_pid,
            current_sessions=sessions,
            spawns=spawns,
            adopted=adopted,
        )
        verdict = classify(evidence, name=config.name, marker=config.marker, our_uid=os.getuid())
        judged.append(Judged(holder, verdict, evidence))
    return judged


async def preflight(
    config: SidecarConfig, *, launch: LaunchKind, ctx: Context, log: FilteringBoundLogger
) -> Outcome:
    """Make the port free for a launch, or say why we must wait or fail."""
    if not config.reconciles or config.port is None:
        return Outcome(Action.LAUNCH)
    try:
        for _ in range(MAX_RERUNS):
            outcome = await _attempt(config, config.port, launch=launch, ctx=ctx, log=log)
            if outcome is not None:
                return outcome
        return Outcome(Action.LAUNCH, reason="the holder kept changing; launching anyway")
    except Exception as exc:  # the preflight must never break a launch (a lookup failed, ...)
        log.warning("reconcile_failed", port=config.port, error=f"{type(exc).__name__}: {exc}")
        return Outcome(Action.LAUNCH, reason="reconcile failed")


async def _attempt(
    config: SidecarConfig,
    port: int,
    *,
    launch: LaunchKind,
    ctx: Context,
    log: FilteringBoundLogger,
) -> Outcome | None:
    """One pass; None means "something changed under us, run again"."""
    # What waiting compares against is every listener, the daemon's own included.
    listeners = await net.find_listeners_async(port)
    own = ctx.own_inodes()
    if not any(lst.inode not in own for lst in listeners):
        inherited = {"inherited": True} if listeners else {}  # only ours listens
        log.info("reconcile_port_free", port=port, **inherited)
        return Outcome(Action.LAUNCH)
    recorded_pid = ctx.recorded_pid()
    sessions = dict(ctx.current_sessions())  # taken on the loop, where the sidecars live
    judge = functools.partial(
        _judge, ctx=ctx, recorded_pid=recorded_pid, listeners=listeners, sessions=sessions
    )
    judged = await workers.run_sync(judge, config, port)
    if not judged:  # released meanwhile: no process held the listening socket any more
        log.info("reconcile_port_free", port=port)
        return Outcome(Action.LAUNCH)
    for item in judged:
        _log_found(log, port, item, recorded_pid)
    action = decide([item.classification for item in judged], config.reclaim, launch)
    match action.act:
        case Act.LAUNCH:
            return Outcome(Action.LAUNCH)
        case Act.WAIT | Act.FAIL:
            if action.blocker is None:
                raise RuntimeError(f"decide named no holder to {action.act} on")  # a bug
            return _left(
                config, port, judged[action.blocker], action.act, listeners=listeners, log=log
            )
        case Act.ASK:
            for index in action.ask:
                item = judged[index]
                if not await _consented(config, item, ctx=ctx, log=log):
                    return _left(config, port, item, Act.WAIT, listeners=listeners, log=log)
                if not ctx.should_run():
                    return Outcome(Action.WAIT, reason="the sidecar was stopped meanwhile")
        case Act.KILL:
            pass
    for index in action.kill:
        if not await _kill(
            config=config,
            port=port,
            judged=judged[index],
            ctx=ctx,
            recorded_pid=recorded_pid,
            sessions=sessions,
            log=log,
        ):
            return None
    return Outcome(Action.LAUNCH)


def _left(
    config: SidecarConfig,
    port: int,
    item: Judged,
    act: Act,
    *,
    listeners: tuple[net.Listener, ...],
    log: FilteringBoundLogger,
) -> Outcome:
    """We leave the holder `item` alone: wait (or fail), and say why."""
    match item.classification.verdict:
        case Verdict.FOREIGN | Verdict.ORPHAN:
            return _foreign(
                config, item.holder, item.classification, act, listeners=listeners, log=log
            )
        case Verdict.LIVE:
            log.info("live_holder_left", port=port, pid=item.holder.pid)
            return _live_wait(port, item, listeners)
        case Verdict.UNPROVEN:
            log.info(
                "unproven_holder_left",
                port=port,
                pid=item.holder.pid,
                reason=item.classification.reason,
            )
            return Outcome(
                Action.WAIT,
                reason=f"port {port} is held by pid {item.holder.pid}, which "
                f"{item.classification.reason}; the supervisor never kills it without asking: "
                "stop it, or start the sidecar from a terminal to be asked",
                holder_pid=item.holder.pid,
                verdict=Verdict.UNPROVEN,
                listeners=frozenset(listeners),
            )


def _log_found(
    log: FilteringBoundLogger, port: int, item: Judged, recorded_pid: int | None
) -> None:
    holder, facts = item.holder, item.holder.facts
    log.info(
        "reconcile_holder_found",
        port=port,
        pid=holder.pid,
        uid=holder.uid,
        user=facts.user if facts else None,
        command=facts.command if facts else None,
        addresses=list(holder.addresses),
        verdict=item.classification.verdict.value,
        reason=item.classification.reason,
        previous_instance=holder.pid is not None and holder.pid == recorded_pid,
    )


def _live_wait(port: int, item: Judged, listeners: tuple[net.Listener, ...]) -> Outcome:
    sidecar = item.classification.current_sidecar
    what = f"sidecar {sidecar!r} of this supervisor" if sidecar else "a live instance"
    owner = item.evidence.owner
    if owner is not None and sidecar is None:
        what += f" of the supervisor pid {owner.pid}"
    return Outcome(
        Action.WAIT,
        reason=f"port {port} is held by {what} (pid {item.holder.pid})",
        holder_pid=item.holder.pid,
        verdict=Verdict.LIVE,
        listeners=frozenset(listeners),
        owner=owner if sidecar is None else None,
    )


def _foreign(
    config: SidecarConfig,
    holder: holders.Holder,
    verdict: Classification,
    act: Act,
    *,
    listeners: tuple[net.Listener, ...],
    log: FilteringBoundLogger,
) -> Outcome:
    facts = holder.facts
    who = f"pid {holder.pid}" if holder.pid is not None else f"a process of uid {holder.uid}"
    fail = act is Act.FAIL
    advice = (
        f"stop that program or change this sidecar's port; the supervisor "
        f"{'gives up' if fail else 'starts it as soon as the port is free'}"
    )
    log.warning(
        "foreign_holder_left",
        port=config.port,
        pid=holder.pid,
        user=facts.user if facts else None,
        uid=holder.uid,
        command=facts.command if facts else None,
        addresses=list(holder.addresses),
        verdict=verdict.verdict.value,
        advice=advice,
    )
    reason = f"port {config.port} is held by {who}, which is not ours ({verdict.reason})"
    return Outcome(
        Action.FAIL if fail else Action.WAIT,
        reason=reason,
        holder_pid=holder.pid,
        verdict=verdict.verdict,
        listeners=frozenset(listeners),
    )


async def _consented(
    config: SidecarConfig, item: Judged, *, ctx: Context, log: FilteringBoundLogger
) -> bool:
    """Ask (one dialog at a time) whether a live or unproven holder may be killed."""
    holder = item.holder
    facts = holder.facts
    if holder.pid is None or facts is None or config.port is None:
        return False
    from supervisor.reconcile import consent  # asked only for a live or unproven holder: rare

    unproven = item.classification.verdict is Verdict.UNPROVEN
    request = consent.ConsentRequest(
        sidecar=config.name,
        port=config.port,
        pid=holder.pid,
        user=facts.user,
        command=facts.command,
        started_at=facts.create_time,
        unproven=unproven,
    )
    async with ctx.consent_lock:  # one dialog at a time
        provider = consent.choose_provider(
            config.reclaim, stdin_is_tty=ctx.stdin_is_tty, unproven=unproven
        )
        log.info(
            "consent_requested",
            port=config.port,
            pid=holder.pid,
            provider=provider.value,
            verdict=item.classification.verdict.value,
            reason=item.classification.reason,
        )
        if provider is consent.Provider.TTY:
            ctx.asking(f"waiting for your answer in the terminal (kill pid {holder.pid}?)")
        try:
            result = await consent.ask(
                config.reclaim, request, stdin_is_tty=ctx.stdin_is_tty, provider=provider
            )
        finally:
            ctx.asking(None)
    if result.granted:
        log.info("consent_granted", port=config.port, pid=holder.pid, detail=result.detail)
    else:
        log.info("consent_declined", port=config.port, pid=holder.pid, detail=result.detail)
    return result.granted


async def _kill(
    *,
    config: SidecarConfig,
    port: int,
    judged: Judged,
    ctx: Context,
    recorded_pid: int | None,
    sessions: Mapping[int, str],
    log: FilteringBoundLogger,
) -> bool:
    """Kill one holder; False if the kill was aborted (the caller re-runs the preflight)."""
    holder, verdict = judged.holder, judged.classification
    if holder.pid is None or holder.facts is None:
        return False
    pid = holder.pid

    def still_ours() -> bool:
        again = _judge(
            config,
            port,
            ctx=ctx,
            recorded_pid=recorded_pid,
            listeners=net.find_listeners(port),
            sessions=sessions,
        )
        same = [j for j in again if j.holder.pid == pid]
        return bool(same) and same[0].classification.verdict is verdict.verdict

    try:
        result = await kill_holder(
            pid,
            holder.facts.create_time,
            port,
            stop_signal=config.stop.signal,
            stop_timeout_s=config.stop.timeout_s,
            still_ours=still_ours,
        )
    except KillAborted as exc:
        log.warning("kill_aborted", port=config.port, pid=pid, reason=exc.reason)
        return False
    event = "orphan_killed" if verdict.verdict is Verdict.ORPHAN else "live_holder_killed"
    log.info(
        event,
        port=config.port,
        pid=pid,
        reason=verdict.reason,
        command=holder.facts.command,
        escalated=result.escalated,
        port_released=result.port_released,
    )
    return True
