"""`supervisor reload --wait`: returns once the daemon applied (0) or rejected (2) the config."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import PYTHON, ROOT, Daemon, demo_sidecar, free_port, read_json, render_config


def reload_wait(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "supervisor", "reload", "--wait", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_reload_wait_returns_once_an_added_sidecar_is_ready(tmp_path: Path) -> None:
    config, state = tmp_path / "supervisor.toml", tmp_path / "state"
    web, extra = demo_sidecar("web", free_port()), demo_sidecar("extra", free_port())
    config.write_text(render_config([web]))
    with Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
        config.write_text(render_config([web, extra]))
        result = reload_wait(state)
        assert result.returncode == 0, result.stderr
        # Read at once: when the command returned, status.json already showed the reload done,
        # with the added sidecar serving.
        status = read_json(state / "status.json")
        states = {s["name"]: (s["state"], s["pid"]) for s in status["sidecars"]}
        assert states["web"] == ("ready", pid)  # unchanged: untouched
        assert states["extra"][0] == "ready"
        daemon.wait_for("config_reloaded")
        assert daemon.stop() == 0


def test_reload_wait_reports_a_rejected_config(tmp_path: Path) -> None:
    config, state = tmp_path / "supervisor.toml", tmp_path / "state"
    config.write_text(render_config([demo_sidecar("web", free_port())]))
    with Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready")
        config.write_text("[[sidecar]]\nname = 'web'\n")  # no command
        result = reload_wait(state)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("supervisor: the new config was rejected: ")
        assert 'sidecar "web": command: is required' in line
        daemon.wait_for("config_invalid")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0


def test_reload_wait_without_a_daemon_exits_3(tmp_path: Path) -> None:
    result = reload_wait(tmp_path / "state")
    assert result.returncode == 3


def test_reload_wait_gives_up_after_its_timeout_and_the_reload_goes_on(tmp_path: Path) -> None:
    config, state = tmp_path / "supervisor.toml", tmp_path / "state"
    web = demo_sidecar("web", free_port())
    # Never ready: it listens on no port (its probe waits up to ready.timeout, 60 s).
    slow = {
        "name": "slow",
        "command": [PYTHON, "-c", "import time; time.sleep(600)"],
        "port": free_port(),
        "ready": {"timeout": 60.0},
    }
    config.write_text(render_config([web]))
    with Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="web")
        config.write_text(render_config([web, slow]))
        result = subprocess.run(
            [PYTHON, "-m", "supervisor", "reload", "--wait", "--timeout", "1",
             "--state-dir", str(state)],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 4, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("supervisor: the reload is not done after 1s")
        daemon.wait_for("sidecar_spawned", sidecar="slow")  # it goes on
        assert daemon.stop() == 0
