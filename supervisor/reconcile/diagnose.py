"""`supervisor port PORT`: who holds a port, the verdict a reconcile would reach, and what to do.

One truth with the daemon: the evidence is the reconcile's own (`evidence.gather`: the holder's
tags, the spawn records that prove it, by the same rules), judged by the same `classify`, and
what the next `supervisor run` does is the same `decide`. The spawn ledgers read are those of
the default state dir, of every daemon in the per-user registry (running, or dead and not yet
cleaned up), of `--state-dir` and of `-c`'s state dir; `-c` also gives the name, marker and
reclaim policy of the sidecar configured on PORT. Without either, a holder passes rule 2 only
through `--marker`, its `SUPERVISOR_SIDECAR` tag or a spawn record: it is judged as the
reconcile of that sidecar would judge it. Read-only: nothing is ever signalled, no ledger
entry pruned. Every string from outside (argv, user names, config values) is printed through
`show.printable`: no control character reaches the terminal raw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from supervisor.config import ReclaimConfig, SidecarConfig
from supervisor.core import show
from supervisor.errors import command as cli_command
from supervisor.evidence.ledger import Spawn
from supervisor.evidence.tags import OwnerTag
from supervisor.reconcile.classify import Classification
from supervisor.reconcile.decide import Act, Action, LaunchKind, decide
from supervisor.system.proctime import same_create_time

NO_MARKER_NOTE = (
    "no --marker given: a holder counts as ours only through SUPERVISOR_SIDECAR in its "
    "environment or a spawn ledger entry; pass --marker to match the sidecar's command line too"
)


@dataclass(frozen=True)
class Known:
    """A spawn ledger, and the daemon of that state dir if it runs."""

    state_dir: Path
    spawns: Sequence[Spawn]
    daemon: tuple[int, float] | None  # (pid, create time) of its running supervisor


@dataclass(frozen=True)
class Diagnosis:
    pid: int | None
    uid: int | None
    user: str | None
    command: str | None
    ppid: int | None
    create_time: float | None
    addresses: tuple[str, ...]
    verdict: str
    reason: str
    advice: str
    sidecar: str | None = None  # by its tag or the ledger
    owner_pid: int | None = None  # the supervisor that started it
    state_dir: str | None = None  # that supervisor's state dir, where known

    def as_json(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "uid": self.uid,
            "user": self.user,
            "command": self.command,
            "ppid": self.ppid,
            "create_time": self.create_time,
            "addresses": list(self.addresses),
            "verdict": self.verdict,
            "reason": self.reason,
            "advice": self.advice,
            "sidecar": self.sidecar,
            "owner_pid": self.owner_pid,
            "state_dir": self.state_dir,
        }


def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _state_dir_of(owner: tuple[int, float] | None, known: Sequence[Known]) -> Path | None:
    """The state dir of the supervisor `owner`: a running one, or the one whose ledger names it."""
    if owner is None:
        return None
    pid, created = owner
    for entry in known:
        if entry.daemon is not None and entry.daemon[0] == pid:
            return entry.state_dir
    for entry in known:
        if any(
            s.daemon_pid == pid and same_create_time(s.daemon_create_time, created)
            for s in entry.spawns
        ):
            return entry.state_dir
    return None


def advise(
    verdict: str, pid: int | None, sidecar: str | None, owner_pid: int | None, state: Path | None
) -> str:
    """What to do about a holder, per verdict (pure)."""
    kill = f"kill {pid}" if pid is not None else "stop that program"
    match verdict:
        case "foreign":
            return (
                f"not ours: the supervisor never touches it; {kill} yourself if you know it is "
                "safe, or give the sidecar another port"
            )
        case "unproven":
            return (
                "it matches the marker only: maybe ours, maybe a copy started by hand; a "
                "supervisor run asks before killing it (from a terminal) and otherwise waits; "
                f"{kill} yourself if you know it is a leftover"
            )
        case "orphan":
            if state is not None:
                run = cli_command("run", "--state-dir", state)
                return f'left by a supervisor that is gone: "{run}" reclaims it, or {kill}'
            return (
                f"left by a supervisor that is gone: the next supervisor run reclaims it, or {kill}"
            )
        case _:
            owner = f"the supervisor pid {owner_pid}" if owner_pid else "a running supervisor"
            if state is None:
                return f"in use by {owner}; stop it there, or {kill} if you are sure"
            stop = (
                cli_command("stop", sidecar, "--state-dir", state)
                if sidecar
                else cli_command("stop", "--state-dir", state)
            )
            return f'in use by {owner} (state dir {state}); stop it with "{stop}"'


@dataclass(frozen=True)
class NextRun:
    """What the next `supervisor run` does about the holders (the same `decide`)."""

    interactive: Action  # launched from a terminal, or by start/restart/reload
    unattended: Action  # a crash restart, or a daemon run with --non-interactive
    configured: bool  # the sidecar's own reclaim policy (-c); else the defaults

    def as_json(self) -> dict[str, object]:
        return {
            "interactive": self.interactive.act.value,
            "unattended": self.unattended.act.value,
            "configured": self.configured,
        }


def _cgroup_owner(
    pid: int | None, known: Sequence[Known]
) -> tuple[str, Path, tuple[int, float] | None] | None:
    """(sidecar, state dir, its running daemon) when `pid` is in a cgroup of a known state dir."""
    from supervisor.system import cgroups

    owner = cgroups.owner_of(pid) if pid is not None else None
    if owner is None:
        return None
    for entry in known:
        try:
            if cgroups.state_id(entry.state_dir) == owner.state_id:
                return owner.sidecar, entry.state_dir, entry.daemon
        except OSError:
            continue
    return None


def diagnose(
    port: int,
    marker: str | None,
    known: Sequence[Known] = (),
    sidecar: SidecarConfig | None = None,
) -> tuple[list[Diagnosis], NextRun]:
    from supervisor.evidence.tags import is_supervisor_daemon
    from supervisor.reconcile.classify import OwnerState, Verdict, classify
    from supervisor.reconcile.evidence import gather
    from supervisor.reconcile.holders import find_holders
    from supervisor.system import procs

    # This CLI process is no daemon: no tag can name it with its create time, so SELF never
    # comes out, and no PID file is consulted.
    our_pid = os.getpid()
    our_create_time = procs.create_time(our_pid) or 0.0
    spawns = [spawn for entry in known for spawn in entry.spawns]
    if sidecar is not None:
        marker = sidecar.marker
    found = []
    verdicts = []
    for holder in find_holders(port):
        evidence = gather(
            holder,
            our_pid=our_pid,
            our_create_time=our_create_time,
            pidfile_pid=None,
            spawns=spawns,
        )
        name = (
            sidecar.name
            if sidecar is not None
            else (evidence.ledger_sidecar or evidence.sidecar_tag or "")
        )
        by_cgroup = _cgroup_owner(holder.pid, known)
        if by_cgroup is not None:  # the kernel's word, as the daemon reads it (SPEC 11.1)
            cgroup_sidecar, folder, running = by_cgroup
            name = sidecar.name if sidecar is not None else cgroup_sidecar
            result = (
                Classification(
                    Verdict.LIVE,
                    f"it is in the cgroup of sidecar {cgroup_sidecar!r} of the supervisor "
                    f"(pid {running[0]}) of {folder}, which runs it now",
                )
                if running is not None
                else classify(
                    replace(evidence, cgroup_sidecar=cgroup_sidecar, cgroup_running=False),
                    name=name,
                    marker=marker or "",
                    our_uid=os.getuid(),
                )
            )
        else:
            result = classify(evidence, name=name, marker=marker or "", our_uid=os.getuid())
        verdicts.append(result)
        facts = holder.facts
        reason = result.reason
        if result.verdict is Verdict.FOREIGN and facts and is_supervisor_daemon(facts.cmdline):
            # socket.inherit: the daemon itself holds its sidecar's port; never reclaimed.
            reason += "; it is a supervisor daemon, holding the port for a sidecar (socket.inherit)"
        owner = evidence.owner
        owner_alive = OwnerState.ALIVE in (evidence.owner_state, evidence.ledger_owner)
        state = _state_dir_of((owner.pid, owner.create_time) if owner else None, known)
        if by_cgroup is not None:
            state = by_cgroup[1]
            running_daemon = by_cgroup[2]
            owner = OwnerTag(*running_daemon) if running_daemon is not None else None
            owner_alive = running_daemon is not None
        found.append(
            Diagnosis(
                pid=holder.pid,
                uid=holder.uid,
                user=(facts.user if facts is not None else None) or _user_name(holder.uid),
                command=facts.command if facts is not None else None,
                ppid=facts.ppid if facts is not None else None,
                create_time=facts.create_time if facts is not None else None,
                addresses=holder.addresses,
                verdict=result.verdict.value,
                reason=reason,
                advice=advise(
                    result.verdict.value,
                    holder.pid,
                    name or None,
                    owner.pid if owner and owner_alive else None,
                    state,
                ),
                sidecar=name or None,
                owner_pid=owner.pid if owner else None,
                state_dir=str(state) if state else None,
            )
        )
    reclaim = sidecar.reclaim if sidecar is not None else ReclaimConfig()
    next_run = NextRun(
        interactive=decide(verdicts, reclaim, LaunchKind.BOOT),
        unattended=decide(verdicts, reclaim, LaunchKind.UNATTENDED),
        configured=sidecar is not None,
    )
    return found, next_run


_ACTS = {
    Act.LAUNCH: "launches at once",
    Act.WAIT: "waits until the port is free",
    Act.FAIL: "gives up (reclaim.foreign = fail)",
    Act.KILL: "kills it silently, then launches",
    Act.ASK: "asks for consent to kill it, then launches (a No: it waits)",
}


def describe_next_run(next_run: NextRun) -> str:
    """One line: what `supervisor run` does, asked and unattended (pure)."""
    asked, unattended = next_run.interactive.act, next_run.unattended.act
    policy = "" if next_run.configured else " (default reclaim policy; -c for the sidecar's)"
    if asked is unattended:
        return f"the next supervisor run {_ACTS[asked]}{policy}"
    return (
        f"the next supervisor run {_ACTS[asked]} when started from a terminal; unattended "
        f"(crash restart, --non-interactive) it {_ACTS[unattended]}{policy}"
    )


def render_text(
    port: int, found: list[Diagnosis], marker: str | None, next_run: NextRun | None = None
) -> str:
    """The diagnosis for a terminal: every outside string escaped (show.printable)."""
    if not found:
        return f"port {port} is free"
    text = show.printable
    lines = [f"port {port} is held by {len(found)} holder{'s' if len(found) > 1 else ''}:"]
    for d in found:
        who = f"pid {d.pid}" if d.pid is not None else "pid unknown"
        user = text(d.user or "?")
        uid = d.uid if d.uid is not None else "?"
        lines.append(
            f"  {who}  user {user} (uid {uid})  ppid {d.ppid if d.ppid is not None else '?'}"
        )
        lines.append(f"    command:   {text(d.command or '(unknown)')}")
        lines.append(f"    listening: {text(', '.join(d.addresses))}")
        lines.append(f"    started:   {show.local_time(d.create_time)}")
        lines.append(f"    verdict:   {d.verdict}: {text(d.reason)}")
        lines.append(f"    to do:     {text(d.advice)}")
    if next_run is not None:
        lines.append(f"next run: {describe_next_run(next_run)}")
    if marker is None and (next_run is None or not next_run.configured):
        lines.append(f"note: {NO_MARKER_NOTE}")
    return "\n".join(lines)


def render_json(port: int, found: list[Diagnosis], next_run: NextRun | None = None) -> str:
    document: dict[str, object] = {
        "port": port,
        "free": not found,
        "holders": [d.as_json() for d in found],
    }
    if next_run is not None and found:
        document["next_run"] = next_run.as_json()
    return json.dumps(document)
