"""examples/node-app driven with the machine's `node`: a real app launches the daemon, learns
readiness and the URL through the control socket, restarts its dashboard, and after being
SIGKILLed (alone, or with its daemon) is launched again and gets its dashboard back.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import PYTHON, ROOT, demo_sidecar, free_port, pid_gone, render_config, wait_until

NODE = shutil.which("node")
APP = ROOT / "examples" / "node-app" / "app.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="no node on this machine")


class App:
    """`node app.js` in a session of its own (so that a killpg takes it and its daemon)."""

    def __init__(self, config: Path, state: Path) -> None:
        assert NODE is not None
        env = {**os.environ, "SUPERVISOR_COMMAND": json.dumps([PYTHON, "-m", "supervisor"])}
        self.proc = subprocess.Popen(
            [NODE, str(APP), "--config", str(config), "--state-dir", str(state)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=config.parent,
            start_new_session=True,
        )

    def said(self, timeout: float = 60.0) -> dict[str, Any]:
        """Its next stdout line (JSON), bounded by `timeout`."""
        assert self.proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        assert box and box[0], f"the app said nothing; stderr: {self.stderr()}"
        message: dict[str, Any] = json.loads(box[0])
        assert message.get("app") != "error", message
        return message

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(running)"
        return self.proc.stderr.read()

    def kill_alone(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=10)

    def kill_group(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=10)


def setup(tmp_path: Path) -> tuple[Path, Path, int]:
    port = free_port()
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config([demo_sidecar("dashboard", port, ready={"probe": "http", "path": "/health"})])
    )
    return config, tmp_path / "state", port


def healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bool(answer.status == 200)


def log_events(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    found = []
    for line in (tmp_path / "supervisor.log").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == name:
            found.append(event)
    return found


def test_node_app_learns_the_url_restarts_and_survives_its_own_sigkill(tmp_path: Path) -> None:
    config, state, port = setup(tmp_path)
    app = App(config, state)
    ready = app.said()
    assert ready["app"] == "ready" and ready["launched"] is True
    assert ready["url"] == f"http://127.0.0.1:{port}/health" and healthy(ready["url"])
    daemon = psutil.Process(ready["daemon"])

    app.tell("restart")
    restarted = app.said()
    assert restarted["app"] == "restarted" and restarted["was"] == ready["pid"]
    assert restarted["pid"] != ready["pid"] and pid_gone(ready["pid"])
    assert healthy(restarted["url"])

    # SIGKILL of the app alone: its daemon notices (--exit-with-parent), stops the dashboard.
    app.kill_alone()
    assert daemon.wait(30) == 0
    assert pid_gone(restarted["pid"])
    assert log_events(tmp_path, "parent_exited")

    again = App(config, state)
    back = again.said()
    assert back["app"] == "ready" and back["launched"] is True
    assert back["daemon"] != ready["daemon"] and healthy(back["url"])
    again.tell("quit")
    assert again.said()["app"] == "bye"
    assert again.proc.wait(30) == 0
    assert pid_gone(back["pid"]) and pid_gone(back["daemon"])


def test_node_app_killed_with_its_daemon_gets_its_orphaned_dashboard_reclaimed(
    tmp_path: Path,
) -> None:
    config, state, _ = setup(tmp_path)
    app = App(config, state)
    ready = app.said()
    assert healthy(ready["url"])
    # The app and its daemon die at once (a killpg, an OOM kill of the app's group): the
    # dashboard, in a session of its own, is left behind holding the port.
    app.kill_group()
    wait_until(lambda: pid_gone(ready["daemon"]), 15, "the daemon to die")
    assert psutil.Process(ready["pid"]).is_running() and healthy(ready["url"])

    again = App(config, state)
    back = again.said()
    assert back["app"] == "ready" and back["launched"] is True
    assert back["pid"] != ready["pid"] and pid_gone(ready["pid"])
    assert healthy(back["url"])
    # Reclaimed as an orphan, or (with a cgroup per sidecar) by emptying its cgroup at start.
    (killed,) = log_events(tmp_path, "orphan_killed") or log_events(
        tmp_path, "cgroup_leftovers_killed"
    )
    assert killed.get("pid", ready["pid"]) == ready["pid"] and killed["sidecar"] == "dashboard"
    again.tell("quit")
    assert again.said()["app"] == "bye"
    assert again.proc.wait(30) == 0
    assert pid_gone(back["pid"]) and pid_gone(back["daemon"])


def test_a_second_instance_of_the_app_attaches_to_the_running_daemon(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    first = App(config, state)
    ready = first.said()
    second = App(config, state)
    attached = second.said()
    # Its own launch exited 75 (the state dir is taken): it uses the running one instead.
    assert attached["launched"] is False and attached["daemon"] == ready["daemon"]
    assert attached["pid"] == ready["pid"]
    second.tell("quit")
    assert second.said()["app"] == "bye" and second.proc.wait(30) == 0
    assert psutil.Process(ready["pid"]).is_running()  # not its daemon: left alone
    first.tell("quit")
    assert first.said()["app"] == "bye" and first.proc.wait(30) == 0
    assert pid_gone(ready["pid"]) and pid_gone(ready["daemon"])
