"""After an unclean exit: reclaim what the previous daemon of this state dir left running.

The port preflight only sees processes that hold a port. A child that was still starting when
its daemon was SIGKILLed (or a grandchild of one) holds none, and would run forever. Its owner
tag names the previous daemon exactly (pid and create time, from the stale `supervisor.pid`),
so it is an orphan of ours by SPEC 5.2 rule 3. Holders of a configured port are left to the
preflight, which reports them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor import net, procs, proctime
from supervisor.config import SidecarConfig, StopConfig
from supervisor.reconcile.kill import KillAborted, kill_process
from supervisor.statedir import float_field, int_field
from supervisor.tags import OWNER_ENV, SIDECAR_ENV, OwnerTag, parse_owner_tag


def previous_owner(record: Mapping[str, object] | None) -> OwnerTag | None:
    """The daemon a stale `supervisor.pid` names, if that daemon is gone (an unclean exit)."""
    pid = int_field(record, "pid")
    created = float_field(record, "create_time")
    if pid is None or created is None or proctime.is_alive(pid, created):
        return None
    return OwnerTag(pid, created)


def _tagged(facts: procs.ProcessFacts | None, owner: OwnerTag) -> bool:
    if facts is None or facts.environ is None:
        return False
    tag = parse_owner_tag(facts.environ.get(OWNER_ENV))
    return (
        tag is not None
        and tag.pid == owner.pid
        and proctime.same_create_time(tag.create_time, owner.create_time)
    )


def find_leftovers(owner: OwnerTag) -> list[procs.ProcessFacts]:
    """Processes of our uid whose owner tag names `owner`, group leaders first."""
    found = []
    me = os.getpid()
    for pid in procs.pids_of_uid(os.getuid()):
        if pid == me:
            continue
        facts = procs.facts(pid)
        if facts is not None and _tagged(facts, owner):
            found.append(facts)
    found.sort(key=lambda f: procs.process_group(f.pid) != f.pid)
    return found


async def sweep(
    owner: OwnerTag, sidecars: Mapping[str, SidecarConfig], log: FilteringBoundLogger
) -> None:
    """Stop every leftover of `owner` that holds none of its sidecar's port."""
    # A scan of every process: a worker thread, off the event loop.
    leftovers = await anyio.to_thread.run_sync(_portless_leftovers, owner, sidecars)
    async with anyio.create_task_group() as tg:
        for facts, config in leftovers:
            tg.start_soon(_reclaim, facts, owner, config.stop if config else StopConfig(), log)


def _portless_leftovers(
    owner: OwnerTag, sidecars: Mapping[str, SidecarConfig]
) -> list[tuple[procs.ProcessFacts, SidecarConfig | None]]:
    found = []
    for facts in find_leftovers(owner):
        name = facts.environ.get(SIDECAR_ENV, "") if facts.environ else ""
        config = sidecars.get(name)
        port = config.port if config is not None else None
        if port is not None and net.pids_listening(port, [facts.pid]):
            continue  # the preflight reclaims it, with its diagnostics
        found.append((facts, config))
    return found


async def _reclaim(
    facts: procs.ProcessFacts, owner: OwnerTag, stop: StopConfig, log: FilteringBoundLogger
) -> None:
    try:
        escalated = await kill_process(
            facts.pid,
            facts.create_time,
            stop_signal=stop.signal,
            stop_timeout_s=stop.timeout_s,
            still_ours=lambda: _tagged(procs.facts(facts.pid), owner),
        )
    except KillAborted:
        return  # gone already (e.g. with its group leader), or no longer ours
    log.info(
        "orphan_killed",
        pid=facts.pid,
        port=None,
        command=facts.command,
        escalated=escalated,
        reason=f"left by a supervisor that did not exit cleanly (pid {owner.pid})",
    )
