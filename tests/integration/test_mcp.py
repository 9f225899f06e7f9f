"""`supervisor mcp` driven over stdio by the MCP SDK's own client, against a real daemon: the
tools are listed, each is called, and `diagnose_port` reads a stranger's port without touching
the stranger. Skipped without the SDK (the `mcp` extra; the test extras include it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    pid_gone,
    render_config,
)

pytest.importorskip("mcp", reason="the MCP SDK (the [mcp] extra) is not installed")

from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

TOOLS = {"status", "logs", "start", "stop", "restart", "wait", "diagnose_port"}


def server(state: Path | None) -> StdioServerParameters:
    where = ["--state-dir", str(state)] if state is not None else []
    return StdioServerParameters(
        command=PYTHON,
        args=["-m", "supervisor", "mcp", *where],
        env={k: v for k, v in os.environ.items() if k != "SUPERVISOR_STATE_DIR"},
        cwd=str(ROOT),
    )


def data(result: CallToolResult, *, error: bool = False) -> dict[str, Any]:
    """The structured result, after checking it has its summary line and the error flag."""
    assert bool(result.is_error) is error, result
    first = result.content[0]
    assert isinstance(first, TextContent) and first.text and "\n" not in first.text
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def call(client: Client, tool: str, arguments: Mapping[str, object]) -> CallToolResult:
    return await client.call_tool(tool, dict(arguments), read_timeout_seconds=120)


@pytest.mark.anyio
async def test_every_tool_over_stdio_against_a_real_daemon(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "supervisor.toml"
    dashboard = demo_sidecar("dashboard", port, ready={"probe": "http", "path": "/health"})
    config.write_text(render_config([dashboard]))
    state = tmp_path / "state"
    with Daemon(config, state, "--non-interactive") as daemon:
        daemon.wait_for("sidecar_ready")
        async with Client(server(state), read_timeout_seconds=120) as client:
            listed = await client.list_tools()
            assert {tool.name for tool in listed.tools} == TOOLS
            for tool in listed.tools:
                assert tool.description, tool.name

            status = data(await call(client, "status", {}))
            assert status["supervisor"]["pid"] == daemon.pid
            (record,) = status["sidecars"]
            assert (record["name"], record["state"]) == ("dashboard", "ready")
            first_pid = record["pid"]

            ready = data(await call(client, "wait", {"names": ["dashboard"], "timeout_s": 60}))
            assert ready["ready"][0]["url"] == f"http://127.0.0.1:{port}/health"

            restarted = data(await call(client, "restart", {"names": ["dashboard"]}))
            assert restarted["results"][0]["action"] == "restarted"
            again = data(await call(client, "wait", {"timeout_s": 60}))
            assert again["ready"][0]["pid"] != first_pid and pid_gone(first_pid)

            logs = data(await call(client, "logs", {"names": ["dashboard"], "lines": 5}))
            listening = f"listening on 127.0.0.1:{port}"
            assert any(listening in line for line in logs["lines"]["dashboard"]), logs
            every = data(await call(client, "logs", {}))
            assert set(every["lines"]) == {"dashboard"}

            stopped = data(await call(client, "stop", {"names": ["dashboard"]}))
            assert stopped["results"][0]["state"] == "stopped"
            timeout = data(await call(client, "wait", {"timeout_s": 0.3}), error=True)
            assert timeout["error"]["type"] == "WaitTimeoutError"
            assert timeout["error"]["pending"] == {"dashboard": "stopped"}
            started = data(await call(client, "start", {"names": ["dashboard"]}))
            assert started["results"][0]["action"] == "started"

            unknown = data(await call(client, "restart", {"names": ["nope"]}), error=True)
            assert unknown["error"]["type"] == "UnknownSidecarError"
            assert unknown["error"]["names"] == ["nope"]
            assert unknown["error"]["known"] == ["dashboard"]
            assert data(await call(client, "stop", {"names": []}), error=True)["error"]


@pytest.mark.anyio
async def test_diagnose_port_names_the_stranger_and_leaves_it_alone(tmp_path: Path) -> None:
    port = free_port()
    with Holder(port) as stranger:
        async with Client(server(None), read_timeout_seconds=120) as client:
            result = await call(client, "diagnose_port", {"port": port})
            held = data(result)
            assert held["port"] == port and held["free"] is False
            (holder,) = held["holders"]
            assert holder["pid"] == stranger.pid and holder["verdict"] == "foreign"
            assert holder["advice"] and "foreign" in held["text"]
            summary = result.content[0]
            assert isinstance(summary, TextContent) and str(stranger.pid) in summary.text

            free = data(await call(client, "diagnose_port", {"port": free_port()}))
            assert free["free"] is True and free["holders"] == []
            bad = data(await call(client, "diagnose_port", {"port": 70000}), error=True)
            assert bad["error"]["port"] == 70000
        assert stranger.untouched()


@pytest.mark.anyio
async def test_without_a_daemon_the_tools_say_so_and_the_server_lives_on(tmp_path: Path) -> None:
    async with Client(server(tmp_path / "none"), read_timeout_seconds=120) as client:
        missing = data(await call(client, "status", {}), error=True)
        assert missing["error"]["type"] == "NotRunningError"
        assert "supervisor run" in missing["error"]["message"]
        assert (await client.list_tools()).tools  # still serving
