"""status.json: the document the daemon writes, and its rendering for `supervisor status`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from supervisor.show import printable


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


def document(
    supervisor: Mapping[str, object], sidecars: Sequence[Mapping[str, object]]
) -> dict[str, object]:
    return {"supervisor": dict(supervisor), "sidecars": [dict(s) for s in sidecars]}


def summary_line(sidecars: Sequence[Mapping[str, object]]) -> str:
    """One line for systemd's STATUS=: `name: state (pid N), ...`."""
    parts = []
    for sidecar in sidecars:
        pid = sidecar.get("pid")
        suffix = f" (pid {pid})" if isinstance(pid, int) else ""
        parts.append(f"{sidecar.get('name')}: {sidecar.get('state')}{suffix}")
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


def _last_exit(value: object) -> str:
    if not isinstance(value, Mapping):
        return "-"
    if value.get("signal"):
        return str(value["signal"])
    code = value.get("code")
    return f"code {code}" if code is not None else "-"


def _memory(value: object) -> str:
    if not isinstance(value, int) or isinstance(value, bool):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return "-"  # unreachable: GiB ends the loop


def _cpu(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.1f}%"


def render_table(doc: Mapping[str, object], now_s: float) -> str:
    """Human table: name, state, pid, port, uptime, restarts, isolation, cpu, memory, last exit,
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
    header = (
        "NAME", "STATE", "PID", "PORT", "UPTIME", "RESTARTS", "ISOLATION", "CPU", "MEM",
        "LAST EXIT", "REASON",
    )  # fmt: skip
    rows: list[tuple[str, ...]] = [header]
    for sidecar in sidecars if isinstance(sidecars, list) else []:
        if not isinstance(sidecar, Mapping):
            continue
        since = parse_iso(sidecar.get("since"))
        uptime = (
            _duration(now_s - since)
            if sidecar.get("state") == "ready" and since is not None
            else "-"
        )
        rows.append(
            (
                str(sidecar.get("name")),
                str(sidecar.get("state")),
                str(sidecar.get("pid") or "-"),
                str(sidecar.get("port") or "-"),
                uptime,
                str(sidecar.get("restarts", 0)),
                str(sidecar.get("isolation") or "-"),
                _cpu(sidecar.get("cpu_percent")),
                _memory(sidecar.get("memory_bytes")),
                _last_exit(sidecar.get("last_exit")),
                str(sidecar.get("reason") or ""),
            )
        )
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
