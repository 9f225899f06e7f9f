"""status.json: the records the daemon keeps (typed), the document it writes of them, and its
rendering for `supervisor status`. JSON is made only at the edges: status.json and the control
protocol (`to_json`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from supervisor.core.lifecycle import State
from supervisor.core.show import printable

OUTPUT_LINES = 20  # recent child output lines carried by `failed` and `exited` events
OUTPUT_LINE_CAP = 1024  # characters kept of each of those lines


def iso_utc(epoch_s: float) -> str:
    """ISO 8601 UTC with a Z suffix, to the second: 2026-01-01T00:00:00Z."""
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class LastExit:
    """How the child's last run ended: its exit code or the signal that killed it (neither for
    a child that could not be started)."""

    code: int | None
    signal: str | None
    at: float  # epoch seconds

    def to_json(self) -> dict[str, object]:
        return {"code": self.code, "signal": self.signal, "at": iso_utc(self.at)}


@dataclass(frozen=True)
class WaitingFor:
    """The dependency a waiting sidecar waits for, and the condition it needs."""

    dependency: str
    condition: str

    def to_json(self) -> dict[str, object]:
        return {"dependency": self.dependency, "condition": self.condition}


@dataclass(frozen=True)
class SidecarRecord:
    """One sidecar as status.json, `status` and the control API describe it (SPEC 6)."""

    name: str
    state: State
    pid: int | None  # the running child's
    create_time: float | None  # the child's, once it is ready
    port: int | None
    url: str | None
    attempts: int
    restarts: int
    since: float  # epoch seconds of the last state change
    last_exit: LastExit | None
    reason: str | None
    depends_on: Mapping[str, str] = field(default_factory=dict)  # name -> condition
    waiting_for: WaitingFor | None = None
    notify_status: str | None = None  # the child's own sd_notify STATUS=

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state.value,
            "pid": self.pid,
            "create_time": self.create_time,
            "port": self.port,
            "url": self.url,
            "attempts": self.attempts,
            "restarts": self.restarts,
            "since": iso_utc(self.since),
            "last_exit": self.last_exit.to_json() if self.last_exit is not None else None,
            "reason": self.reason,
            "depends_on": dict(self.depends_on),
            "waiting_for": self.waiting_for.to_json() if self.waiting_for is not None else None,
            "notify_status": self.notify_status,
        }


def document(
    supervisor: Mapping[str, object], sidecars: Sequence[Mapping[str, object]]
) -> dict[str, object]:
    return {"supervisor": dict(supervisor), "sidecars": [dict(s) for s in sidecars]}


def summary_line(sidecars: Sequence[SidecarRecord]) -> str:
    """One line for systemd's STATUS=: `name: state (pid N), ...`."""
    parts = []
    for sidecar in sidecars:
        suffix = f" (pid {sidecar.pid})" if sidecar.pid is not None else ""
        parts.append(f"{sidecar.name}: {sidecar.state.value}{suffix}")
    return ", ".join(parts) if parts else "no sidecars"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def render_duration(seconds: float) -> str:
    """`42s`, `3m5s`, `2h10m`, `4d1h`."""
    return _duration(seconds)


def _last_exit(value: object) -> str:
    if not isinstance(value, Mapping):
        return "-"
    if value.get("signal"):
        return str(value["signal"])
    code = value.get("code")
    return f"code {code}" if code is not None else "-"


def _depends(value: object) -> str:
    """`db:ready,migrate:completed`, or `-`."""
    if not isinstance(value, Mapping) or not value:
        return "-"
    return ",".join(f"{name}:{condition}" for name, condition in value.items())


def cpu_text(value: object) -> str:
    """`12%` of one core (`0.4%` below 10); `-` when unknown."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.1f}%" if value < 10 else f"{value:.0f}%"


def memory_text(value: object) -> str:
    """Bytes as `512K`, `38.2M`, `1.1G`; `-` when unknown."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return "-"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= size:
            number = value / size
            return f"{number:.1f}{unit}" if number < 100 else f"{number:.0f}{unit}"
    return f"{value}B"


def render_table(doc: Mapping[str, object], now_s: float) -> str:
    """Human table: name, state, pid, port, uptime, cpu, memory, restarts, isolation, last exit,
    [depends,]
    reason."""
    daemon = doc.get("supervisor")
    sidecars = doc.get("sidecars")
    lines = []
    if isinstance(daemon, Mapping):
        started = parse_iso(daemon.get("started_at"))
        up = _duration(now_s - started) if started is not None else "?"
        where = f", state dir {daemon['state_dir']}" if daemon.get("state_dir") else ""
        lines.append(
            f"supervisor pid {daemon.get('pid')}, up {up}, config {daemon.get('config')}{where}"
        )
    entries = [
        s for s in (sidecars if isinstance(sidecars, list) else []) if isinstance(s, Mapping)
    ]
    # The DEPENDS column only when some sidecar has dependencies (SPEC 11.2).
    with_deps = any(s.get("depends_on") for s in entries)
    header: tuple[str, ...] = (
        "NAME", "STATE", "PID", "PORT", "UPTIME", "CPU", "MEM", "RESTARTS", "ISOLATION",
        "LAST EXIT",
    )  # fmt: skip
    header += ("DEPENDS", "REASON") if with_deps else ("REASON",)
    rows: list[tuple[str, ...]] = [header]
    for sidecar in entries:
        since = parse_iso(sidecar.get("since"))
        uptime = (
            _duration(now_s - since)
            if sidecar.get("state") == "ready" and since is not None
            else "-"
        )
        row: tuple[str, ...] = (
            str(sidecar.get("name")),
            str(sidecar.get("state")),
            str(sidecar.get("pid") or "-"),
            str(sidecar.get("port") or "-"),
            uptime,
            cpu_text(sidecar.get("cpu_percent")),
            memory_text(sidecar.get("memory_bytes")),
            str(sidecar.get("restarts", 0)),
            str(sidecar.get("isolation") or "-"),
            _last_exit(sidecar.get("last_exit")),
        )
        if with_deps:
            row += (_depends(sidecar.get("depends_on")),)
        # A child's own sd_notify STATUS= when nothing else needs saying.
        notified = sidecar.get("notify_status")
        reason = sidecar.get("reason") or (f"status: {notified}" if notified else "")
        rows.append((*row, printable(str(reason))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_event(event: Mapping[str, object]) -> str:
    """One line for `supervisor events`: when, who, what, and the fields that matter for it."""
    kind = event.get("event")
    parts = [str(event.get("at")), str(event.get("sidecar") or "supervisor"), str(kind)]
    if isinstance(event.get("pid"), int):
        parts.append(f"pid {event['pid']}")
    match kind:
        case "ready":
            parts.append(str(event.get("url") or ""))
        case "waiting" if event.get("dependency"):
            parts.append(str(event.get("reason") or ""))
        case "waiting":
            parts.append(
                f"port {event.get('port')} held by pid {event.get('holder_pid') or '?'} "
                f"({event.get('verdict') or 'unknown'})"
            )
        case "backoff":
            parts.append(
                f"restart {event.get('attempt')}/{event.get('max_attempts')} "
                f"in {event.get('delay_s')}s"
            )
        case "failed" | "exited":
            parts.append(str(event.get("reason") or ""))
            output = event.get("output")
            if isinstance(output, list) and output:
                parts.append(f"last output: {str(output[-1])[:200]}")
        case "daemon_stopping":
            parts.append(str(event.get("reason") or ""))
    return printable("  ".join(p for p in parts if p))


class Details(NamedTuple):
    """What a sidecar knows beyond its status record, for the event of its current state."""

    holder_pid: int | None = None  # waiting: who holds the port
    verdict: str | None = None  # waiting: foreign / live / ...
    attempt: int = 0  # backoff: the restart number about to happen
    max_attempts: int = 0
    delay_s: float | None = None  # backoff: how long until the next attempt
    next_attempt_at: float | None = None  # backoff: epoch seconds of the next attempt
    output: tuple[str, ...] = ()  # the latest lines of the child's output, oldest first
    dependency: str | None = None  # waiting: the dependency whose condition does not hold
    condition: str | None = None


class Observed(Protocol):
    """What the hub reads of a sidecar (supervisor.sidecar.loop.Sidecar): the
    daemon's callbacks and the event hub take this, so the layers below need not import it."""

    @property
    def name(self) -> str: ...

    def record(self) -> SidecarRecord: ...

    def details(self) -> Details: ...
