"""The reconcile preflight run before every launch: find, classify, act (SPEC 5.3).

It never raises into the launch path: any error is logged as `reconcile_failed` and the launch
proceeds to spawn.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import net
from supervisor.config import ForeignAction, LiveAction, OrphanAction, SidecarConfig
from supervisor.reconcile import consent, holders
from supervisor.reconcile.classify import Classification, Verdict, classify
from supervisor.reconcile.evidence import gather
from supervisor.reconcile.kill import KillAborted, kill_holder

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


@dataclass(frozen=True)
class Context:
    our_pid: int
    our_create_time: float
    recorded_pid: Callable[[], int | None]  # the sidecar's PID file: annotation only
    stdin_is_tty: bool
    consent_lock: anyio.Lock
    should_run: Callable[[], bool]
    # The daemon's own inherited sockets (socket.inherit): never a holder to reclaim.
    own_inodes: Callable[[], frozenset[int]] = frozenset


def _evaluate(
    config: SidecarConfig, holder: holders.Holder, ctx: Context, recorded_pid: int | None
) -> Classification:
    evidence = gather(
        holder,
        our_pid=ctx.our_pid,
        our_create_time=ctx.our_create_time,
        pidfile_pid=recorded_pid,
    )
    return classify(evidence, name=config.name, marker=config.marker, our_uid=os.getuid())


async def preflight(
    config: SidecarConfig, *, interactive: bool, ctx: Context, log: FilteringBoundLogger
) -> Outcome:
    """Make the port free for a launch, or say why we must wait or fail."""
    if not config.reconciles or config.port is None:
        return Outcome(Action.LAUNCH)
    try:
        for _ in range(MAX_RERUNS):
            outcome = await _attempt(config, config.port, interactive=interactive, ctx=ctx, log=log)
            if outcome is not None:
                return outcome
        return Outcome(Action.LAUNCH, reason="the holder kept changing; launching anyway")
    except Exception as exc:  # the preflight must never break a launch
        log.warning("reconcile_failed", port=config.port, error=f"{type(exc).__name__}: {exc}")
        return Outcome(Action.LAUNCH, reason="reconcile failed")


async def _attempt(
    config: SidecarConfig,
    port: int,
    *,
    interactive: bool,
    ctx: Context,
    log: FilteringBoundLogger,
) -> Outcome | None:
    """One pass; None means "something changed under us, run again"."""
    # What waiting compares against is every listener, the daemon's own included.
    listeners = net.find_listeners(port)
    own = ctx.own_inodes()
    if not any(lst.inode not in own for lst in listeners):
        inherited = {"inherited": True} if listeners else {}  # only ours listens
        log.info("reconcile_port_free", port=port, **inherited)
        return Outcome(Action.LAUNCH)
    recorded_pid = ctx.recorded_pid()
    found = tuple(
        holder
        for holder in holders.find_holders(port, candidates=[recorded_pid] if recorded_pid else [])
        if holder.pid != ctx.our_pid  # the daemon holds its inherited socket: never a holder
    )
    if not found:  # released between the two looks
        log.info("reconcile_port_free", port=port)
        return Outcome(Action.LAUNCH)
    to_kill: list[tuple[holders.Holder, Classification]] = []
    blocking: Outcome | None = None
    for holder in found:
        verdict = _evaluate(config, holder, ctx, recorded_pid)
        facts = holder.facts
        log.info(
            "reconcile_holder_found",
            port=port,
            pid=holder.pid,
            uid=holder.uid,
            user=facts.user if facts else None,
            command=facts.command if facts else None,
            addresses=list(holder.addresses),
            verdict=verdict.verdict.value,
            reason=verdict.reason,
            previous_instance=holder.pid is not None and holder.pid == recorded_pid,
        )
        match verdict.verdict:
            case Verdict.ORPHAN if config.reclaim.orphan is OrphanAction.KILL:
                to_kill.append((holder, verdict))
            case Verdict.ORPHAN | Verdict.FOREIGN:
                blocking = blocking or _foreign(config, holder, verdict, listeners, log)
            case Verdict.LIVE:
                if await _live_consented(config, holder, interactive=interactive, ctx=ctx, log=log):
                    if not ctx.should_run():
                        return Outcome(Action.WAIT, reason="the sidecar was stopped meanwhile")
                    to_kill.append((holder, verdict))
                else:
                    log.info("live_holder_left", port=port, pid=holder.pid)
                    blocking = blocking or Outcome(
                        Action.WAIT,
                        reason=f"port {port} is held by a live instance (pid {holder.pid})",
                        holder_pid=holder.pid,
                        verdict=Verdict.LIVE,
                        listeners=frozenset(listeners),
                    )
    if blocking is not None:
        return blocking
    for holder, verdict in to_kill:
        if not await _kill(
            config=config,
            port=port,
            holder=holder,
            verdict=verdict,
            ctx=ctx,
            recorded_pid=recorded_pid,
            log=log,
        ):
            return None
    return Outcome(Action.LAUNCH)


def _foreign(
    config: SidecarConfig,
    holder: holders.Holder,
    verdict: Classification,
    listeners: tuple[net.Listener, ...],
    log: FilteringBoundLogger,
) -> Outcome:
    facts = holder.facts
    who = f"pid {holder.pid}" if holder.pid is not None else f"a process of uid {holder.uid}"
    fail = config.reclaim.foreign is ForeignAction.FAIL
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


async def _live_consented(
    config: SidecarConfig,
    holder: holders.Holder,
    *,
    interactive: bool,
    ctx: Context,
    log: FilteringBoundLogger,
) -> bool:
    if not interactive or config.reclaim.live is LiveAction.LEAVE:
        return False
    facts = holder.facts
    if holder.pid is None or facts is None or config.port is None:
        return False
    request = consent.ConsentRequest(
        sidecar=config.name,
        port=config.port,
        pid=holder.pid,
        user=facts.user,
        command=facts.command,
        started_at=facts.create_time,
    )
    async with ctx.consent_lock:  # one dialog at a time
        provider = consent.choose_provider(config.reclaim, stdin_is_tty=ctx.stdin_is_tty)
        log.info("consent_requested", port=config.port, pid=holder.pid, provider=provider.value)
        result = await consent.ask(config.reclaim, request, stdin_is_tty=ctx.stdin_is_tty)
    if result.granted:
        log.info("consent_granted", port=config.port, pid=holder.pid, detail=result.detail)
    else:
        log.info("consent_declined", port=config.port, pid=holder.pid, detail=result.detail)
    return result.granted


async def _kill(
    *,
    config: SidecarConfig,
    port: int,
    holder: holders.Holder,
    verdict: Classification,
    ctx: Context,
    recorded_pid: int | None,
    log: FilteringBoundLogger,
) -> bool:
    """Kill one holder; False if the kill was aborted (the caller re-runs the preflight)."""
    if holder.pid is None or holder.facts is None:
        return False
    pid = holder.pid

    def still_ours() -> bool:
        again = holders.find_holders(port, candidates=[pid])
        same = [h for h in again if h.pid == pid]
        return bool(same) and _evaluate(config, same[0], ctx, recorded_pid).verdict is (
            verdict.verdict
        )

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
        command=holder.facts.command,
        escalated=result.escalated,
        port_released=result.port_released,
    )
    return True
