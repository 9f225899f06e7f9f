"""The MCP tools' work, without the SDK: each returns a one-line summary and a JSON object, or
raises a SupervisorError (supervisor.mcp.server turns both into tool results)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from supervisor.errors import EXIT_USAGE, SupervisorError

if TYPE_CHECKING:
    from supervisor.client import AsyncClient, Sidecar, Status
    from supervisor.reconcile import diagnose

MAX_WAIT_S = 300.0
MAX_LOG_LINES = 2000
LINE_CHARS = 2000  # a log line longer than this is cut (an agent's context is precious)

KnownLedgers = Callable[[str | None], "list[diagnose.Known]"]


@dataclass(frozen=True)
class Target:
    """Which daemon the tools address: -c / --state-dir, else $SUPERVISOR_STATE_DIR, else the
    one running daemon of the registry (as every command does)."""

    config: str | None
    state_dir: str | None

    async def client(self) -> AsyncClient:
        from supervisor.client import AsyncClient

        return await AsyncClient.connect(self.state_dir, config=self.config)


Json = dict[str, Any]


def _sidecar(s: Sidecar) -> Json:
    return {
        "name": s.name,
        "state": str(s.state),
        "pid": s.pid,
        "port": s.port,
        "url": s.url,
        "restarts": s.restarts,
        "reason": s.reason,
    }


def _line(s: Sidecar) -> str:
    where = f" {s.url}" if s.url else ""
    why = f" ({s.reason})" if s.reason and not s.ready else ""
    return f"{s.name} {s.state}{where}{why}"


def _status_data(status: Status) -> Json:
    return {
        "supervisor": {
            "pid": status.daemon.pid,
            "state_dir": str(status.daemon.state_dir),
            "config": str(status.daemon.config) if status.daemon.config else None,
            "shutting_down": status.daemon.shutting_down,
        },
        "sidecars": [dict(s.record) for s in status.sidecars],
    }


# -- the tools (each: a summary line and a JSON object) --------------------------------------------


async def status(target: Target, names: Sequence[str]) -> tuple[str, Json]:
    async with await target.client() as client:
        current = await client.status(*names)
    lines = "; ".join(_line(s) for s in current.sidecars) or "no sidecars"
    summary = f"supervisor pid {current.daemon.pid} ({current.daemon.state_dir}): {lines}"
    return summary, _status_data(current)


async def act(target: Target, verb: str, names: Sequence[str]) -> tuple[str, Json]:
    if not names:
        raise _NoNamesError(verb)
    async with await target.client() as client:
        results = await getattr(client, verb)(*names)
    listed = "; ".join(f"{r.name} {r.action} (was {r.was}, now {r.state})" for r in results)
    data = {
        "results": [
            {"name": r.name, "action": r.action, "was": str(r.was), "state": str(r.state),
             "pid": r.pid}
            for r in results
        ]
    }  # fmt: skip
    return listed, data


async def wait(target: Target, names: Sequence[str], timeout_s: float) -> tuple[str, Json]:
    bounded = min(max(timeout_s, 0.0), MAX_WAIT_S)
    async with await target.client() as client:
        ready = await client.wait(*names, timeout_s=bounded)
    summary = "ready: " + "; ".join(_line(s) for s in ready)
    return summary, {"ready": [_sidecar(s) for s in ready]}


def read_logs(target: Target, names: Sequence[str], lines: int) -> tuple[str, Json]:
    from supervisor.control import client as control
    from supervisor.sidecar import tail

    count = min(max(lines, 0), MAX_LOG_LINES)
    state_dir = control.resolve_state_dir(target.config, target.state_dir)
    if not control.explicit(target.config, target.state_dir):
        running = control.discover()
        if len(running) == 1:
            state_dir = running[0].state_dir
    wanted = list(names) or sorted(tail.known_names(state_dir, ()))
    found: dict[str, list[str]] = {}
    for name in wanted:
        reader = tail.OutputReader.open(state_dir, name, ())
        try:
            found[name] = [
                line.decode("utf-8", "replace").rstrip("\n")[:LINE_CHARS]
                for line in reader.last(count)
            ]
        finally:
            reader.close()
    total = sum(len(v) for v in found.values())
    summary = f"{total} lines of output from {len(found)} sidecar(s) in {state_dir}"
    return summary, {"state_dir": str(state_dir), "lines": found}


def diagnose_port(
    port: int, marker: str | None, known: KnownLedgers, state_dir: str | None
) -> Json:
    from supervisor.reconcile import diagnose

    if not 1 <= port <= 65535:
        raise _BadPortError(port)
    found, next_run = diagnose.diagnose(port, marker or None, known(state_dir))
    data: Json = json.loads(diagnose.render_json(port, found, next_run))
    data["text"] = diagnose.render_text(port, found, marker or None, next_run)
    return data


class _NoNamesError(SupervisorError):
    exit_code = EXIT_USAGE

    def __init__(self, verb: str) -> None:
        self.verb = verb
        super().__init__(f"{verb} needs at least one sidecar name; the status tool lists them")


class _BadPortError(SupervisorError):
    exit_code = EXIT_USAGE

    def __init__(self, port: int) -> None:
        self.port = port
        super().__init__(f"port {port} is not a TCP port; give one of 1..65535")
