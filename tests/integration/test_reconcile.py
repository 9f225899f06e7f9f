"""The reconcile preflight end to end: real holders on real ports, real daemons, real signals."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.support import (
    PYTHON,
    Daemon,
    Holder,
    daemon_command,
    demo_sidecar,
    free_port,
    pid_gone,
    render_config,
    wait_logged,
    wait_recorded,
    wait_until,
)


def config_for(tmp_path: Path, sidecars: list[dict[str, object]]) -> Path:
    # The preflight's evidence without a cgroup: a cgroup would reclaim a dead daemon's
    # leftovers before the preflight looks (that path: tests/integration/test_cgroups.py).
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars, {"isolation": "none"}))
    return config


def test_orphan_of_a_sigkilled_daemon_is_reclaimed_by_the_next_run(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, [demo_sidecar("web", port)])
    first = Daemon(config, tmp_path / "state")
    orphan = first.wait_for("sidecar_ready")["pid"]
    first.kill()
    # The orphan survives its daemon and keeps the port; it was reparented to the nearest
    # subreaper (this test process), not to pid 1.
    assert psutil.Process(orphan).ppid() == os.getpid()
    with Daemon(config, tmp_path / "state") as second:
        found = second.wait_for("reconcile_holder_found")
        assert found["pid"] == orphan and found["verdict"] == "orphan"
        assert found["previous_instance"] is True
        killed = second.wait_for("orphan_killed")
        assert killed["pid"] == orphan and killed["escalated"] is False
        ready = second.wait_for("sidecar_ready")
        assert ready["pid"] != orphan
        assert pid_gone(orphan)
        assert second.stop() == 0


def test_term_ignoring_orphan_is_sigkilled_after_stop_timeout(tmp_path: Path) -> None:
    port = free_port()
    sidecar = demo_sidecar("web", port, "--ignore-sigterm", stop={"timeout": 0.5})
    config = config_for(tmp_path, [sidecar])
    first = Daemon(config, tmp_path / "state")
    orphan = first.wait_for("sidecar_ready")["pid"]
    first.kill()
    with Daemon(config, tmp_path / "state") as second:
        killed = second.wait_for("orphan_killed")
        assert killed["pid"] == orphan and killed["escalated"] is True
        second.wait_for("sidecar_ready")
        assert pid_gone(orphan)
        assert second.stop() == 0


SUBREAPER = textwrap.dedent(
    """
    import ctypes, subprocess, sys
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    log = open(sys.argv[1], "wb")
    daemon = subprocess.Popen(sys.argv[2:], stderr=log, stdin=subprocess.DEVNULL)
    print(daemon.pid, flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_CHILD_SUBREAPER is Linux-only")
def test_orphan_reparented_to_a_subreaper_is_still_an_orphan(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, [demo_sidecar("web", port)])
    state = tmp_path / "state"
    log = tmp_path / "first.log"
    reaper = subprocess.Popen(
        [PYTHON, "-c", SUBREAPER, str(log), *daemon_command(config, state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert reaper.stdout is not None and reaper.stdin is not None
    daemon_pid = int(reaper.stdout.readline())
    orphan = wait_logged(log, "sidecar_ready")["pid"]
    psutil.Process(daemon_pid).kill()
    deadline = time.monotonic() + 10
    while psutil.Process(orphan).ppid() != reaper.pid:  # reparented to the subreaper
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        with Daemon(config, state) as second:
            found = second.wait_for("reconcile_holder_found")
            assert found["pid"] == orphan and found["verdict"] == "orphan"
            second.wait_for("orphan_killed", pid=orphan)
            second.wait_for("sidecar_ready")
            assert second.stop() == 0
    finally:
        reaper.stdin.close()
        reaper.wait(10)
        reaper.stdout.close()


@pytest.mark.parametrize(
    ("host", "flags", "probe_host"),
    [
        ("127.0.0.1", (), "127.0.0.1"),
        ("0.0.0.0", (), "127.0.0.1"),
        ("::", ("dualstack",), "127.0.0.1"),
        ("::", ("v6only",), "::1"),
        ("::1", ("v6only",), "::1"),
    ],
    ids=["loopback4", "any4", "any6-dualstack", "any6-v6only", "loopback6"],
)
def test_foreign_holder_is_untouched_and_we_start_once_it_leaves(
    tmp_path: Path, host: str, flags: tuple[str, ...], probe_host: str
) -> None:
    port = free_port(ipv6=True)
    sidecar = demo_sidecar("web", port)
    sidecar["command"] = [*demo_command_for(port, probe_host)]
    sidecar["host"] = probe_host
    config = config_for(tmp_path, [sidecar])
    holder = Holder(port, host, *flags)
    try:
        with Daemon(config, tmp_path / "state") as daemon:
            found = daemon.wait_for("reconcile_holder_found")
            assert found["pid"] == holder.pid and found["verdict"] == "foreign"
            left = daemon.wait_for("foreign_holder_left")
            assert left["pid"] == holder.pid and left["command"] and left["addresses"]
            assert "advice" in left
            waiting = daemon.wait_for("sidecar_waiting")
            assert waiting["verdict"] == "foreign" and waiting["holder_pid"] == holder.pid
            assert holder.untouched()
            holder.stop()
            daemon.wait_for("sidecar_ready", timeout=10)
            spawned = daemon.find("sidecar_spawned")
            assert len(spawned) == 1 and spawned[0]["interactive"] is False
            assert daemon.stop() == 0
    finally:
        holder.stop()


def demo_command_for(port: int, host: str) -> list[str]:
    return [PYTHON, "-m", "supervisor.demo", "--port", str(port), "--host", host]


def test_foreign_with_fail_policy_fails_without_touching_it(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, [demo_sidecar("web", port, reclaim={"foreign": "fail"})])
    with Holder(port) as holder, Daemon(config, tmp_path / "state") as daemon:
        failed = daemon.wait_for("sidecar_start_failed")
        assert "not ours" in str(failed["reason"])
        assert holder.untouched()
        assert not daemon.find("sidecar_spawned")
        assert daemon.stop() == 0


def _run_as_nobody() -> list[str] | None:
    if os.geteuid() != 0:
        return None
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    return None


@pytest.mark.root
def test_holder_of_another_uid_is_foreign_and_untouched(tmp_path: Path) -> None:
    prefix = _run_as_nobody()
    if prefix is None:
        pytest.skip("needs root and setpriv/runuser to start a holder as nobody")
    port = free_port()
    # Even with our marker in its command line, another user's process is never ours.
    sidecar = demo_sidecar("web", port, marker="supervisor.demo")
    config = config_for(tmp_path, [sidecar])
    with (
        Holder(port, "127.0.0.1", "-", "supervisor.demo", user_cmd=prefix) as holder,
        Daemon(config, tmp_path / "state") as daemon,
    ):
        found = daemon.wait_for("reconcile_holder_found")
        assert found["verdict"] == "foreign"
        assert found["uid"] == psutil.Process(holder.pid).uids().real != 0
        daemon.wait_for("sidecar_waiting")
        assert holder.untouched()
        assert daemon.stop() == 0


def test_hand_started_instance_with_a_living_parent_is_unproven_and_untouched(
    tmp_path: Path,
) -> None:
    """It matches the marker only (issue 24: was `live`; the action is the same: untouched,
    the sidecar waits; consent is asked only at an interactive launch with a terminal)."""
    port = free_port()
    marker = "hand-started-sidecar"
    sidecar = demo_sidecar("web", port, marker=marker)
    config = config_for(tmp_path, [sidecar])
    with Holder(port, "127.0.0.1", "-", marker) as holder, Daemon(config, tmp_path / "state") as d:
        found = d.wait_for("reconcile_holder_found")
        assert found["pid"] == holder.pid and found["verdict"] == "unproven"
        assert "matches the marker only" in found["reason"]
        waiting = d.wait_for("sidecar_waiting")
        assert waiting["verdict"] == "unproven"
        d.wait_for("unproven_holder_left")
        assert holder.untouched()
        assert d.stop() == 0


def test_pidfile_naming_an_unrelated_live_process_is_harmless(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, [demo_sidecar("web", port)])
    bystander = subprocess.Popen(
        [PYTHON, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE
    )
    try:
        created = psutil.Process(bystander.pid).create_time()
        pid_dir = tmp_path / "state" / "web"
        pid_dir.mkdir(parents=True)
        (pid_dir / "sidecar.pid").write_text(
            json.dumps({"pid": bystander.pid, "create_time": created, "port": port})
        )
        with Daemon(config, tmp_path / "state") as daemon:
            daemon.wait_for("sidecar_ready")
            assert bystander.poll() is None
            assert psutil.Process(bystander.pid).create_time() == created
            assert daemon.stop() == 0
    finally:
        assert bystander.stdin is not None
        bystander.stdin.close()
        bystander.wait(10)


STARTING_FOREVER = textwrap.dedent(
    """
    import os, signal, time
    # A child that never gets as far as binding its port, with a grandchild in its group.
    if os.fork() == 0:
        while True:
            signal.pause()
    print("started", flush=True)
    while True:
        signal.pause()
    """
)


def test_leftovers_holding_no_port_are_reclaimed_after_an_unclean_exit(tmp_path: Path) -> None:
    port = free_port()
    sidecar: dict[str, object] = {
        "name": "slow",
        "command": [PYTHON, "-c", STARTING_FOREVER],
        "port": port,
        "ready": {"timeout": 60.0},
    }
    config = config_for(tmp_path, [sidecar])
    first = Daemon(config, tmp_path / "state")
    child = first.wait_for("sidecar_spawned")["pid"]
    first.wait_for("child_output", line="started")
    group = [p.pid for p in psutil.Process(child).children()] + [child]
    wait_recorded(tmp_path / "state", child)  # the unclean exit comes after the ledger entry
    first.kill()
    with Daemon(config, tmp_path / "state") as second:
        killed = second.wait_for("orphan_killed", pid=child)
        assert "did not exit cleanly" in str(killed["reason"])
        for pid in group:  # the whole group got the stop signal; the rest follows its leader
            wait_until(functools.partial(pid_gone, pid), 10.0, f"leftover {pid} to be gone")
        assert second.wait_for("sidecar_spawned")["pid"] not in group
        assert second.stop() == 0


def test_a_clean_exit_leaves_nothing_to_sweep(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, [demo_sidecar("web", port)])
    with Daemon(config, tmp_path / "state") as first:
        first.wait_for("sidecar_ready")
        assert first.stop() == 0
    with Daemon(config, tmp_path / "state") as second:
        second.wait_for("sidecar_ready")
        assert not second.find("orphan_killed")
        assert second.stop() == 0
