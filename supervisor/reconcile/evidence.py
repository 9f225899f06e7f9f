"""The I/O shell of the classifier: turn a Holder into Evidence (tags, ledger, ancestors)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supervisor.evidence import ledger, tags
from supervisor.reconcile.classify import (
    Evidence,
    OwnerState,
)
from supervisor.reconcile.holders import Holder
from supervisor.system import cgroups, procs, proctime


def owner_state(tag_text: str | None, *, our_pid: int, our_create_time: float) -> OwnerState:
    """Resolve a SUPERVISOR_OWNER value against the live process table."""
    return resolve_owner(tags.parse_owner_tag(tag_text), our_pid, our_create_time)


def resolve_owner(tag: tags.OwnerTag | None, our_pid: int, our_create_time: float) -> OwnerState:
    if tag is None:
        return OwnerState.NONE
    if tag.pid == our_pid and proctime.same_create_time(tag.create_time, our_create_time):
        return OwnerState.SELF
    if proctime.is_alive(tag.pid, tag.create_time):
        return OwnerState.ALIVE
    return OwnerState.GONE


def has_supervisor_ancestor(pid: int) -> bool:
    for ancestor in procs.ancestors(pid):
        found = procs.facts(ancestor, with_environ=False)
        if found is not None and tags.is_supervisor_daemon(found.cmdline):
            return True
    return False


def gather(
    holder: Holder,
    *,
    our_pid: int,
    our_create_time: float,
    pidfile_pid: int | None,
    current_sessions: Mapping[int, str] | None = None,
    spawns: Sequence[ledger.Spawn] = (),
    adopted: frozenset[int] = frozenset(),
) -> Evidence:
    facts = holder.facts
    environ = facts.environ if facts is not None else None
    tag_text = environ.get(tags.OWNER_ENV) if environ is not None else None
    entry = find_spawn(holder.pid, facts.create_time, spawns) if facts is not None else None
    recorded_owner = (
        tags.OwnerTag(entry.daemon_pid, entry.daemon_create_time) if entry is not None else None
    )
    tagged_owner = tags.parse_owner_tag(tag_text)
    cgroup_sidecar, cgroup_running = _cgroup_evidence(holder.pid, current_sessions or {})
    return Evidence(
        pid=holder.pid,
        uid=holder.uid,
        command=facts.command if facts is not None else "",
        ppid=facts.ppid if facts is not None else None,
        sidecar_tag=environ.get(tags.SIDECAR_ENV) if environ is not None else None,
        owner_state=resolve_owner(tagged_owner, our_pid, our_create_time),
        supervisor_ancestor=holder.pid is not None and has_supervisor_ancestor(holder.pid),
        pidfile_match=pidfile_pid is not None and pidfile_pid == holder.pid,
        current_sidecar=_current_sidecar(holder.pid, current_sessions or {}),
        ledger_sidecar=entry.sidecar if entry is not None else None,
        ledger_owner=resolve_owner(recorded_owner, our_pid, our_create_time),
        owner=recorded_owner or tagged_owner,
        adopted=holder.pid is not None and holder.pid in adopted,
        cgroup_sidecar=cgroup_sidecar,
        cgroup_running=cgroup_running,
    )


MAX_CHAIN = 64  # ancestors followed: a deeper tree than this proves nothing more


def lineage(pid: int, create_time: float) -> ledger.Lineage:
    """The facts `ledger.proven_by` judges: the chain of living parents (each with its create
    time, read after its pid: see docs/reliability.md on why that order is sound) and the
    identities now behind the session and group numbers."""
    chain = [(pid, create_time)]
    current = pid
    while len(chain) < MAX_CHAIN:
        parent = procs.parent_pid(current)
        if parent is None or parent <= 1:
            break
        created = procs.create_time(parent)
        if created is None:
            break
        chain.append((parent, created))
        current = parent
    sid, pgid = procs.session_id(pid), procs.process_group(pid)
    return ledger.Lineage(
        chain=tuple(chain),
        sid=sid,
        pgid=pgid,
        session_leader=_alive(sid),
        group_leader=_alive(pgid),
    )


def _alive(pid: int | None) -> tuple[int, float] | None:
    """(pid, create time) of the living, non-zombie process `pid`, if there is one."""
    if pid is None or pid <= 0:
        return None
    created = procs.create_time(pid)
    if created is None or not proctime.is_alive(pid, created):
        return None
    return pid, created


def _cgroup_evidence(pid: int | None, sessions: Mapping[int, str]) -> tuple[str | None, bool]:
    """The sidecar whose cgroup holds `pid`, if it is this daemon's state dir's
    (cgroups.active), and whether that sidecar runs now."""
    isolation = cgroups.active()
    owner = isolation.owns(pid) if isolation is not None and pid is not None else None
    if owner is None:
        return None, False
    return owner.sidecar, owner.sidecar in sessions.values()


def find_spawn(
    pid: int | None, create_time: float, spawns: Sequence[ledger.Spawn]
) -> ledger.Spawn | None:
    """The ledger entry that proves `pid` ours (ledger.proven_by), if any."""
    if pid is None or not spawns:
        return None
    return ledger.proven_by(lineage(pid, create_time), spawns)


def _current_sidecar(pid: int | None, sessions: Mapping[int, str]) -> str | None:
    """Rule 0: the sidecar whose current child leads the session `pid` is in, if any."""
    if pid is None or not sessions:
        return None
    if pid in sessions:
        return sessions[pid]
    sid = procs.session_id(pid)
    return sessions.get(sid) if sid is not None else None
