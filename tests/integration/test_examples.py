"""The servers in examples/ serve on the inherited socket under a real daemon, across a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support import PYTHON, ROOT, Daemon, free_port, render_config

NODE = shutil.which("node")

EXAMPLES = [
    pytest.param([PYTHON, str(ROOT / "examples" / "python" / "server.py")], id="python"),
    pytest.param(
        [NODE or "node", str(ROOT / "examples" / "node" / "server.js")],
        id="node",
        marks=pytest.mark.skipif(NODE is None, reason="node is not installed"),
    ),
]


def fd3_inode(pid: int) -> int:
    link = os.readlink(f"/proc/{pid}/fd/3")
    return int(link.removeprefix("socket:[").removesuffix("]"))


def health(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        assert response.status == 200
        answer: dict[str, object] = json.loads(response.read())
        return answer


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/fd")
@pytest.mark.parametrize("command", EXAMPLES)
def test_example_serves_on_the_inherited_socket_across_a_crash(
    command: list[str], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "supervisor.toml"
    sidecar = {
        "name": "example",
        "command": command,
        "port": port,
        "ready": {"probe": "http", "path": "/health"},
        "restart": {"base_delay": 0.05},
        "socket": {"inherit": True},
    }
    config.write_text(render_config([sidecar]))
    with Daemon(config, tmp_path / "state") as daemon:
        inode = daemon.wait_for("socket_bound")["inode"]
        daemon.wait_for("child_output", line="serving on inherited fd 3")
        first = daemon.wait_for("sidecar_ready")["pid"]
        assert health(port) == {"status": "ok", "pid": first}
        assert fd3_inode(first) == inode
        os.kill(first, signal.SIGKILL)
        second = daemon.wait_for("sidecar_ready", count=2)["pid"]
        assert health(port) == {"status": "ok", "pid": second}
        assert fd3_inode(second) == inode
        assert daemon.stop() == 0
        assert daemon.find("sidecar_stopped", pid=second, escalated=False)


@pytest.mark.parametrize("command", EXAMPLES)
def test_example_binds_the_port_itself_when_started_alone(
    command: list[str], tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "supervisor.toml"
    sidecar = {
        "name": "example",
        "command": command,
        "env": {"PORT": str(port)},
        "port": port,
        "ready": {"probe": "http", "path": "/health"},
    }
    config.write_text(render_config([sidecar]))
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("child_output", line=f"listening on 127.0.0.1:{port}")
        pid = daemon.wait_for("sidecar_ready")["pid"]
        assert health(port) == {"status": "ok", "pid": pid}
        assert daemon.stop() == 0
