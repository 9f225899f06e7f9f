"""Cold start (SPEC 10): what only later work needs stays off the path to the first spawn.

`python -m bench coldstart` has the figures; this keeps the deferred imports deferred.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import Daemon, demo_command, free_port, pid_gone, render_config

# Imported where first used: after the first launches, only for some configs, or never at all
# on a plain start (psutil: proctime reads /proc on Linux).
DEFERRED = (
    "mcp",  # the optional SDK of `supervisor mcp`, and the public client: never the daemon's
    "supervisor.client",
    "supervisor.mcp",
    "supervisor.control.actions",
    "supervisor.control.client",
    "supervisor.control.server",
    "supervisor.sidecar.health",
    "supervisor.system.logfile",
    "supervisor.reconcile.consent",
    "supervisor.reconcile.sweep",
    "supervisor.control.registry",
    "supervisor.core.reload",
)

PROBE = """
import json, sys
from supervisor import cli, entry  # what `supervisor run` imports before it starts
from supervisor.daemon import main
print(json.dumps(list(sys.modules)))
"""


def loaded_by_run() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def test_the_daemon_imports_nothing_that_only_later_work_needs() -> None:
    loaded = loaded_by_run()
    assert loaded.isdisjoint(DEFERRED), sorted(loaded & set(DEFERRED))


@pytest.mark.skipif(sys.platform != "linux", reason="elsewhere proctime needs psutil")
def test_psutil_is_not_loaded_by_a_plain_start(tmp_path: Path) -> None:
    """A real daemon through its sidecar's readiness: psutil's extension is not even mapped."""
    assert "psutil" not in loaded_by_run()
    port = free_port()
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([{"name": "web", "command": demo_command(port), "port": port}]))
    with Daemon(config, tmp_path / "state", "--non-interactive") as daemon:
        daemon.wait_for("sidecar_ready")
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        assert "_psutil_linux" not in maps


def test_the_control_socket_opens_after_the_first_launch_over_an_orphan(tmp_path: Path) -> None:
    """The control server's imports and the sweep wait until the first launch got past its
    preflight: over an orphan, the preflight's scans run in a worker thread, and the event loop
    used to import the control server meanwhile, ahead of the kill and the spawn."""
    port = free_port()
    config = tmp_path / "supervisor.toml"
    # isolation = "none": the preflight's path (with a cgroup, the dead daemon's cgroup is
    # emptied before any preflight runs: test_cgroups)
    config.write_text(
        render_config(
            [{"name": "web", "command": demo_command(port), "port": port}], {"isolation": "none"}
        )
    )
    first = Daemon(config, tmp_path / "state", "--non-interactive")
    orphan = first.wait_for("sidecar_ready")["pid"]
    first.kill()
    with Daemon(config, tmp_path / "state", "--non-interactive") as second:
        killed = second.wait_for("orphan_killed")
        assert killed["pid"] == orphan
        spawned = second.wait_for("sidecar_spawned")
        listening = second.wait_for("control_listening")
        order = [e["event"] for e in second.events]
        assert order.index("sidecar_spawned") < order.index("control_listening"), order
        assert spawned["pid"] != orphan and listening is not None
        assert second.stop() == 0
    assert pid_gone(orphan)
