"""At start: reclaim what earlier daemons of this state dir left running, by the spawn ledger.

The port preflight only sees processes that hold a port. A child that was still starting when
its daemon was SIGKILLed (or a grandchild of one) holds none, and would run forever. The ledger
names every process those daemons spawned, of every generation, so each leftover proven ours
(ledger.proven_by: it is a recorded process, descends from a living one, or is in the session
or group a living recorded process leads) whose entry's daemon is gone is stopped as an
orphan. Holders of a configured port are left to the preflight, which reports them.

Gather (`gather`: the scan, in a worker thread) -> plan (`plan`: pure) -> act (`sweep`).

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

from supervisor.config import SidecarConfig, StopConfig
from supervisor.evidence.ledger import Ledger, Spawn
from supervisor.evidence.tags import OWNER_ENV, OwnerTag, parse_owner_tag
from supervisor.reconcile.evidence import find_spawn
from supervisor.reconcile.kill import KillAborted, kill_process
from supervisor.system import net, procs, proctime, workers
from supervisor.system.statedir import float_field, int_field


def previous_owner(record: Mapping[str, object] | None) -> OwnerTag | None:
    """The daemon a stale `supervisor.pid` names, if that daemon is gone (an unclean exit)."""
    pid = int_field(record, "pid")
    created = float_field(record, "create_time")
    if pid is None or created is None or proctime.is_alive(pid, created):
        return None
    return OwnerTag(pid, created)


@dataclass(frozen=True)
class Seen:
    """One process of our uid, as the scan found it."""

    facts: procs.ProcessFacts
    leads_group: bool  # it leads its process group: stopped first (its group goes with it)
    entry: Spawn | None  # the entry that proves it ours (ledger.proven_by), if any
    holds_its_port: bool  # it listens on its entry's sidecar's port: the preflight's
    tagged_by_previous: bool  # its owner tag names a daemon of this state dir that is gone


@dataclass(frozen=True)
class Plan:
    stop: list[tuple[procs.ProcessFacts, Spawn]]  # proven ours, holding no port: reclaimed
    left: list[procs.ProcessFacts]  # tagged by a gone daemon, but not proven ours
    done: list[Spawn]  # entries of gone daemons that prove no living process: forgotten


def plan(seen: Sequence[Seen], orphaned: Sequence[Spawn]) -> Plan:
    """What the sweep does with what the scan saw (pure). `orphaned`: the entries whose daemon
    is neither us nor alive."""
    gone = set(orphaned)
    proving: set[Spawn] = set()
    stop: list[tuple[procs.ProcessFacts, Spawn]] = []
    left: list[procs.ProcessFacts] = []
    for item in seen:
        if item.entry is not None:
            proving.add(item.entry)
            if item.entry in gone and not item.holds_its_port:
                stop.append((item.facts, item.entry))
        elif item.tagged_by_previous:
            left.append(item.facts)
    leaders = {item.facts.pid for item in seen if item.leads_group}
    stop.sort(key=lambda pair: pair[0].pid not in leaders)  # leaders first
    return Plan(stop, left, [entry for entry in orphaned if entry not in proving])


def _gone(entry: Spawn, us: OwnerTag) -> bool:
    """The entry's daemon is neither us nor alive: whatever is left of it is an orphan."""
    if entry.daemon_pid == us.pid and proctime.same_create_time(
        entry.daemon_create_time, us.create_time
    ):
        return False
    return not proctime.is_alive(entry.daemon_pid, entry.daemon_create_time)


def gather(
    spawns: Sequence[Spawn],
    previous: OwnerTag | None,
    sidecars: Mapping[str, SidecarConfig],
    us: OwnerTag,
) -> tuple[list[Seen], list[Spawn]]:
    """One scan of our uid's processes against the ledger (blocking: run it in a worker
    thread): what each is, and the entries whose daemon is gone."""
    orphaned = [entry for entry in spawns if _gone(entry, us)]
    previous_daemons = {(e.daemon_pid, e.daemon_create_time) for e in orphaned}
    if previous is not None:
        previous_daemons.add((previous.pid, previous.create_time))
    if not orphaned and previous is None:
        return [], []
    me = os.getpid()
    seen: list[Seen] = []
    for pid in procs.pids_of_uid(os.getuid()):
        if pid == me:
            continue
        facts = procs.facts(pid)
        if facts is None:
            continue
        entry = find_spawn(pid, facts.create_time, spawns)
        tagged = entry is None and _tagged_by(facts, previous_daemons)
        if entry is None and not tagged:
            continue
        seen.append(
            Seen(
                facts=facts,
                leads_group=procs.process_group(pid) == pid,
                entry=entry,
                holds_its_port=entry is not None
                and _holds_its_port(pid, sidecars.get(entry.sidecar)),
                tagged_by_previous=tagged,
            )
        )
    return seen, orphaned


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
    seen, orphaned = await workers.run_sync(gather, spawns, previous, sidecars, us)
    work = plan(seen, orphaned)
    for facts in work.left:
        log.info(
            "orphan_left",
            pid=facts.pid,
            command=facts.command,
            reason="it carries the tags of a supervisor that is gone, but no spawn record "
            "proves it ours (it left that supervisor's session, or its recorded ancestor is "
            "gone): not touched",
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
    # Only the recorded process itself keeps an entry worth keeping (ledger.py).
    return proctime.is_alive(entry.pid, entry.create_time)


async def _reclaim(
    facts: procs.ProcessFacts, entry: Spawn, stop: StopConfig, log: FilteringBoundLogger
) -> None:
    def still_ours() -> bool:
        # Proven ours when planned; the same process (pid and create time) stays ours, even
        # once the leader whose session proved it has exited.
        return proctime.is_alive(facts.pid, facts.create_time)

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
        "by its spawn record)",
    )
