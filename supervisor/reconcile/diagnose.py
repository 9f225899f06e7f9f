"""`supervisor port PORT`: who holds a port and the verdict a reconcile would reach (read-only).

Without `--marker`, a holder can only pass rule 2 through its own `SUPERVISOR_SIDECAR` tag: the
diagnosis judges it as the reconcile of that sidecar would. Nothing is ever signalled.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from supervisor import show

NO_MARKER_NOTE = (
    "no --marker given: a holder counts as ours only through SUPERVISOR_SIDECAR in its "
    "environment; pass --marker to match the sidecar's command line too"
)


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
        }


def _user_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def diagnose(port: int, marker: str | None) -> list[Diagnosis]:
    from supervisor import procs
    from supervisor.reconcile.classify import Verdict, classify
    from supervisor.reconcile.evidence import gather
    from supervisor.reconcile.holders import find_holders
    from supervisor.tags import is_supervisor_daemon

    # This CLI process is no daemon: no tag can name it with its create time, so SELF never
    # comes out, and no PID file is consulted.
    our_pid = os.getpid()
    our_create_time = procs.create_time(our_pid) or 0.0
    found = []
    for holder in find_holders(port):
        evidence = gather(
            holder, our_pid=our_pid, our_create_time=our_create_time, pidfile_pid=None
        )
        name = evidence.sidecar_tag or ""
        result = classify(evidence, name=name, marker=marker or "", our_uid=os.getuid())
        facts = holder.facts
        reason = result.reason
        if result.verdict is Verdict.FOREIGN and facts and is_supervisor_daemon(facts.cmdline):
            # socket.inherit: the daemon itself holds its sidecar's port; never reclaimed.
            reason += "; it is a supervisor daemon, holding the port for a sidecar (socket.inherit)"
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
            )
        )
    return found


def render_text(port: int, found: list[Diagnosis], marker: str | None) -> str:
    if not found:
        return f"port {port} is free"
    lines = [f"port {port} is held by {len(found)} holder{'s' if len(found) > 1 else ''}:"]
    for d in found:
        who = f"pid {d.pid}" if d.pid is not None else "pid unknown"
        user = d.user or "?"
        uid = d.uid if d.uid is not None else "?"
        lines.append(
            f"  {who}  user {user} (uid {uid})  ppid {d.ppid if d.ppid is not None else '?'}"
        )
        lines.append(f"    command:   {d.command or '(unknown)'}")
        lines.append(f"    listening: {', '.join(d.addresses)}")
        lines.append(f"    started:   {show.local_time(d.create_time)}")
        lines.append(f"    verdict:   {d.verdict}: {d.reason}")
    if marker is None:
        lines.append(f"note: {NO_MARKER_NOTE}")
    return "\n".join(lines)


def render_json(port: int, found: list[Diagnosis]) -> str:
    document = {"port": port, "free": not found, "holders": [d.as_json() for d in found]}
    return json.dumps(document)
