"""`supervisor port PORT`: a read-only diagnosis of real holders, as text and JSON."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import psutil
import pytest

from supervisor.errors import EXIT_OK, EXIT_PORT_HELD
from supervisor.evidence.tags import format_owner_tag
from tests.support import PYTHON, Holder, free_port, run_cli

MARKER = "sidecar-marker-7f3a"


def run_port(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("port", *args, clean=True)


def port_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = run_port(*args, "--json")
    document: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, document


def dead_owner_tag() -> str:
    """An owner tag naming a process that existed and is gone now."""
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait(10)
    return format_owner_tag(proc.pid, created)


def test_free_port_exits_zero() -> None:
    port = free_port(ipv6=True)
    result = run_port(str(port))
    assert result.returncode == EXIT_OK, result.stderr
    assert f"port {port} is free" in result.stdout
    code, document = port_json(str(port))
    assert code == EXIT_OK
    assert document == {"port": port, "free": True, "holders": []}


def test_foreign_holder_exits_ten_and_is_left_alone() -> None:
    port = free_port()
    with Holder(port) as holder:
        result = run_port(str(port), "--marker", MARKER)
        assert result.returncode == EXIT_PORT_HELD, result.stderr
        assert f"pid {holder.pid}" in result.stdout
        assert f"127.0.0.1:{port}" in result.stdout
        assert "verdict:   foreign" in result.stdout

        code, document = port_json(str(port), "--marker", MARKER)
        assert code == EXIT_PORT_HELD
        assert document["free"] is False
        (found,) = document["holders"]
        assert found["pid"] == holder.pid
        assert found["uid"] == os.getuid()
        assert found["addresses"] == [f"127.0.0.1:{port}"]
        assert found["verdict"] == "foreign"
        assert found["create_time"] == pytest.approx(holder.create_time, abs=0.02)
        assert found["ppid"] == psutil.Process(holder.pid).ppid()
        assert "python" in found["command"]
        assert found["user"]
        assert found["reason"]
        assert holder.untouched()


def test_holder_with_dead_owner_is_an_orphan() -> None:
    port = free_port()
    env = {"SUPERVISOR_SIDECAR": "x", "SUPERVISOR_OWNER": dead_owner_tag()}
    with Holder(port, env=env, argv0_marker=MARKER) as holder:
        result = run_port(str(port), "--marker", MARKER)
        assert result.returncode == EXIT_PORT_HELD, result.stderr
        assert "verdict:   orphan" in result.stdout
        code, document = port_json(str(port), "--marker", MARKER)
        assert code == EXIT_PORT_HELD
        assert [(h["pid"], h["verdict"]) for h in document["holders"]] == [(holder.pid, "orphan")]
        assert holder.untouched()


def test_holder_whose_owner_lives_is_live() -> None:
    port = free_port()
    me = psutil.Process()
    env = {
        "SUPERVISOR_SIDECAR": "x",
        "SUPERVISOR_OWNER": format_owner_tag(me.pid, me.create_time()),
    }
    with Holder(port, env=env, argv0_marker=MARKER) as holder:
        code, document = port_json(str(port), "--marker", MARKER)
        assert code == EXIT_PORT_HELD
        assert [(h["pid"], h["verdict"]) for h in document["holders"]] == [(holder.pid, "live")]
        assert holder.untouched()


def test_without_marker_the_sidecar_tag_alone_makes_it_ours() -> None:
    port = free_port()
    env = {"SUPERVISOR_SIDECAR": "x", "SUPERVISOR_OWNER": dead_owner_tag()}
    with Holder(port, env=env) as holder:
        result = run_port(str(port))
        assert result.returncode == EXIT_PORT_HELD, result.stderr
        assert "verdict:   orphan" in result.stdout
        assert "no --marker given" in result.stdout
    with Holder(port) as holder:
        code, document = port_json(str(port))
        assert code == EXIT_PORT_HELD
        (found,) = document["holders"]
        assert (found["pid"], found["verdict"]) == (holder.pid, "foreign")
        assert "no marker was given" in found["reason"]
