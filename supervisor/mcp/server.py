"""The MCP server (the SDK is imported here): the tools, their schemas and their results."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations

from supervisor import __version__
from supervisor.errors import SupervisorError
from supervisor.mcp import tools
from supervisor.mcp.tools import Json, KnownLedgers, Target


def _result(summary: str, data: Json, *, error: bool = False) -> CallToolResult:
    text = json.dumps(data, indent=1, default=str)
    return CallToolResult(
        content=[TextContent(text=summary), TextContent(text=text)],
        structured_content=data,
        is_error=error,
    )


def _error(exc: SupervisorError) -> CallToolResult:
    fields = {k: v for k, v in vars(exc).items() if not k.startswith("_") and k != "message"}
    data = {"error": {"type": type(exc).__name__, "message": exc.message, **fields}}
    return _result(f"error: {exc.message}", json.loads(json.dumps(data, default=str)), error=True)


async def _guarded(call: Awaitable[tuple[str, Json]]) -> CallToolResult:
    try:
        summary, data = await call
    except SupervisorError as exc:
        return _error(exc)
    return _result(summary, data)


INSTRUCTIONS = (
    "sidecar-supervisor runs local helper servers (sidecars) and reconciles who holds their "
    "ports. Use status to see them (state, pid, url), logs for their recent output, "
    "start/stop/restart NAME to act on them, wait to block until they are ready, and "
    "diagnose_port PORT to learn who holds a port and what to do about it (read-only)."
)


def build(target: Target, known: KnownLedgers) -> MCPServer[Any]:
    """The server and its tools (they reach the daemon only when called)."""
    server: MCPServer[Any] = MCPServer(
        "sidecar-supervisor", version=__version__, instructions=INSTRUCTIONS
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(name="status", annotations=read_only)
    async def status_tool(names: list[str] | None = None) -> CallToolResult:
        """The supervisor and its sidecars: state, pid, port, url, restarts, last exit, reason.
        `names` limits it to those sidecars."""
        return await _guarded(tools.status(target, names or ()))

    @server.tool(name="logs", annotations=read_only)
    async def logs_tool(names: list[str] | None = None, lines: int = 50) -> CallToolResult:
        """The last `lines` lines (at most 2000) of the output of each of `names` (default:
        every sidecar), from their output.log and its rotated files."""

        async def read() -> tuple[str, Json]:
            return await anyio.to_thread.run_sync(tools.read_logs, target, names or (), lines)

        return await _guarded(read())

    changing = ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=False)

    @server.tool(name="start", annotations=ToolAnnotations(destructive_hint=False))
    async def start_tool(names: list[str]) -> CallToolResult:
        """Start these sidecars (one already ready or starting is left alone). Returns once the
        launch has begun; use wait for readiness."""
        return await _guarded(tools.act(target, "start", names))

    @server.tool(name="stop", annotations=changing)
    async def stop_tool(names: list[str]) -> CallToolResult:
        """Stop these sidecars (they stay stopped until started). Returns once they are gone."""
        return await _guarded(tools.act(target, "stop", names))

    @server.tool(name="restart", annotations=changing)
    async def restart_tool(names: list[str]) -> CallToolResult:
        """Restart these sidecars (stop, then a fresh launch). Use wait for readiness."""
        return await _guarded(tools.act(target, "restart", names))

    @server.tool(name="wait", annotations=read_only)
    async def wait_tool(names: list[str] | None = None, timeout_s: float = 30.0) -> CallToolResult:
        """Block until `names` (default: every sidecar) are ready, at most `timeout_s` seconds
        (at most 300). Fails at once if one has failed or exited, with the reason."""
        return await _guarded(tools.wait(target, names or (), timeout_s))

    @server.tool(name="diagnose_port", annotations=read_only)
    async def diagnose_port_tool(port: int, marker: str | None = None) -> CallToolResult:
        """Who holds TCP `port` (pid, user, command), whether it is ours (orphan / live) or a
        stranger (foreign), and what to do. Read-only: nothing is signalled. `marker`: a
        command-line substring that marks our program."""

        async def run() -> tuple[str, Json]:
            data = await anyio.to_thread.run_sync(
                tools.diagnose_port, port, marker, known, target.state_dir
            )
            holders = data.get("holders") or []
            if not holders:
                return f"port {port} is free", data
            first = holders[0]
            summary = (
                f"port {port}: held by pid {first.get('pid')} ({first.get('verdict')}); "
                f"{first.get('advice')}"
            )
            return summary, data

        return await _guarded(run())

    return server
