"""At start: reclaim what earlier daemons of this state dir left running, by the spawn ledger.

The port preflight only sees processes that hold a port. A child that was still starting when
its daemon was SIGKILLed (or a grandchild of one) holds none, and would run forever. The ledger
names every process those daemons spawned, of every generation, so each leftover proven ours
(it is a ledger process, or in the session of one, and that entry's daemon is gone) is stopped
as an orphan. Holders of a configured port are left to the preflight, which reports them.

A process that merely inherited the env tags but left the session (a browser a dev server
opened with its own setsid) is not proven ours: it is left alone and reported (`orphan_left`),
as a clean stop would leave it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import net, procs, proctime, workers
from supervisor.config import SidecarConfig, StopConfig
from supervisor.ledger import Ledger, Spawn
from supervisor.reconcile.evidence import find_spawn
from supervisor.reconcile.kill import KillAborted, kill_process
from supervisor.statedir import float_field, int_field
from supervisor.tags import OWNER_ENV, OwnerTag, parse_owner_tag


def previous_owner(record: Mapping[str, object] | None) -> OwnerTag | None:
    """The daemon a stale `supervisor.pid` names, if that daemon is gone (an unclean exit)."""
    pid = int_field(record, "pid")
    created = float_field(record, "create_time")
    if pid is None or created is None or proctime.is_alive(pid, created):
        return None
    return OwnerTag(pid, created)


@dataclass(frozen=True)
class Plan:
    stop: list[tuple[procs.ProcessFacts, Spawn]]  # proven ours, holding no port: reclaimed
    left: list[procs.ProcessFacts]  # tagged by a gone daemon, but not proven ours
    done: list[Spawn]  # entries whose process and session are gone: forgotten


def _gone(entry: Spawn, us: OwnerTag) -> bool:
    """The entry's daemon is neither us nor alive: whatever is left of it is an orphan."""
    if entry.daemon_pid == us.pid and proctime.same_create_time(
        entry.daemon_create_time, us.create_time
    ):
        return False
    return not proctime.is_alive(entry.daemon_pid, entry.daemon_create_time)


def plan(
    spawns: Sequence[Spawn],
    previous: OwnerTag | None,
    sidecars: Mapping[str, SidecarConfig],
    us: OwnerTag,
) -> Plan:
    """One scan of our processes against the ledger (blocking: run it in a worker thread)."""
    orphaned = [entry for entry in spawns if _gone(entry, us)]
    previous_daemons = {(e.daemon_pid, e.daemon_create_time) for e in orphaned}
    if previous is not None:
        previous_daemons.add((previous.pid, previous.create_time))
    if not orphaned and previous is None:
        return Plan([], [], [])
    me = os.getpid()
    live_entries: set[Spawn] = set()
    stop: list[tuple[procs.ProcessFacts, Spawn]] = []
    left: list[procs.ProcessFacts] = []
    for pid in procs.pids_of_uid(os.getuid()):
        if pid == me:
            continue
        facts = procs.facts(pid)
        if facts is None:
            continue
        mine = find_spawn(pid, facts.create_time, spawns)
        if mine is not None:
            live_entries.add(mine)
            if mine in orphaned and not _holds_its_port(pid, sidecars.get(mine.sidecar)):
                stop.append((facts, mine))
            continue
        if _tagged_by(facts, previous_daemons):
            left.append(facts)
    done = [entry for entry in orphaned if entry not in live_entries]
    stop.sort(key=lambda item: procs.process_group(item[0].pid) != item[0].pid)  # leaders first
    return Plan(stop, left, done)


def _holds_its_port(pid: int, config: SidecarConfig | None) -> bool:
    return (
        config is not None
        and config.port is not None
        and bool(net.pids_listening(config.port, [pid]))
    )


def _tagged_by(facts: procs.ProcessFacts, daemons: set[tuple[int, float]]) -> bool:
    if facts.environ is None:
        return False
    tag = parse_owner_tag(facts.environ.get(OWNER_ENV))
    return tag is not None and any(
        tag.pid == pid and proctime.same_create_time(tag.create_time, created)
        for pid, created in daemons
    )


async def sweep(
    book: Ledger,
    previous: OwnerTag | None,
    sidecars: Mapping[str, SidecarConfig],
    us: OwnerTag,
    log: FilteringBoundLogger,
) -> None:
    """Stop every leftover of earlier daemons that is proven ours and holds no port."""
    spawns = await workers.run_sync(book.entries)
    work = await workers.run_sync(plan, spawns, previous, sidecars, us)
    for facts in work.left:
        log.info(
            "orphan_left",
            pid=facts.pid,
            command=facts.command,
            reason="it carries the tags of a supervisor that is gone, but left that "
            "supervisor's session (its own setsid): not proven ours, so not touched",
        )
    async with anyio.create_task_group() as tg:
        for facts, entry in work.stop:
            config = sidecars.get(entry.sidecar)
            tg.start_soon(_reclaim, facts, entry, config.stop if config else StopConfig(), log)
    reclaimed = {entry for _, entry in work.stop}
    for entry in [*work.done, *reclaimed]:
        if entry in reclaimed and await workers.run_sync(_still_there, entry):
            continue  # a member still holds a port: the preflight deals with it
        await workers.run_sync(book.forget, entry)


def _still_there(entry: Spawn) -> bool:
    return proctime.is_alive(entry.pid, entry.create_time) or bool(procs.session_members(entry.sid))


async def _reclaim(
    facts: procs.ProcessFacts, entry: Spawn, stop: StopConfig, log: FilteringBoundLogger
) -> None:
    def still_ours() -> bool:
        now = procs.facts(facts.pid, with_environ=False)
        return now is not None and find_spawn(now.pid, now.create_time, [entry]) is not None

    try:
        escalated = await kill_process(
            facts.pid,
            facts.create_time,
            stop_signal=stop.signal,
            stop_timeout_s=stop.timeout_s,
            still_ours=still_ours,
        )
    except KillAborted:
        return  # gone already (e.g. with its group leader), or no longer ours
    log.info(
        "orphan_killed",
        pid=facts.pid,
        port=None,
        command=facts.command,
        escalated=escalated,
        reason=f"left by a supervisor that did not exit cleanly (pid {entry.daemon_pid}; "
        "by the spawn ledger)",
    )
