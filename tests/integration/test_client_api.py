"""supervisor.client, the public Python API, blocking and async, against real daemons: launch or
attach (exit 75), connect by state dir and by discovery, wait/url/status, start/stop/restart,
events, and its errors with their fields.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest

from supervisor.client import (
    AsyncClient,
    Client,
    LaunchFailedError,
    NotRunningError,
    SidecarDownError,
    State,
    UnknownSidecarError,
    WaitTimeoutError,
)
from tests.support import PYTHON, demo_sidecar, free_port, pid_gone, render_config, sidecar_entry


def setup(tmp_path: Path, *extra: dict[str, object]) -> tuple[Path, Path, int]:
    port = free_port()
    config = tmp_path / "supervisor.toml"
    dashboard = demo_sidecar("dashboard", port, ready={"probe": "http", "path": "/health"})
    config.write_text(render_config([dashboard, *extra]))
    return config, tmp_path / "state", port


def healthy(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return bool(answer.status == 200)


def test_launch_wait_url_and_close_stops_the_daemon_it_launched(tmp_path: Path) -> None:
    config, state, port = setup(tmp_path)
    with Client.launch(state, config=config) as sup:
        assert sup.launched and sup.child is not None and sup.daemon.pid == sup.child.pid
        (dashboard,) = sup.wait("dashboard", timeout_s=60)
        assert dashboard.state is State.READY and dashboard.ready
        assert dashboard.url == f"http://127.0.0.1:{port}/health" == sup.url("dashboard")
        assert healthy(dashboard.url)
        status = sup.status()
        assert status.daemon.pid == sup.daemon.pid and status.daemon.state_dir == state
        assert status.names == ("dashboard",) and status["dashboard"].pid == dashboard.pid
        daemon_pid = sup.daemon.pid
    assert pid_gone(daemon_pid)
    assert dashboard.pid is not None and pid_gone(dashboard.pid)
    assert any('"sidecar_ready"' in line for line in (tmp_path / "supervisor.log").open())


def test_a_second_launch_attaches_and_connect_finds_it_by_state_dir(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    with Client.launch(state, config=config) as first:
        (ready,) = first.wait(timeout_s=60)
        with Client.launch(state, config=config) as second:  # its own launch exits 75
            assert not second.launched and second.child is None
            assert second.daemon.pid == first.daemon.pid
        with Client.connect(state) as third:
            assert third.status()["dashboard"].pid == ready.pid
        assert first.status()["dashboard"].pid == ready.pid  # attached ones stop nothing


def test_three_racing_launches_make_one_daemon_and_two_attach(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    with ThreadPoolExecutor(3) as pool:
        clients = list(pool.map(lambda _: Client.launch(state, config=config), range(3)))
    try:
        assert sorted(c.launched for c in clients) == [False, False, True]
        assert len({c.daemon.pid for c in clients}) == 1
        for client in clients:
            (ready,) = client.wait(timeout_s=60)
            assert ready.ready
    finally:
        for client in sorted(clients, key=lambda c: c.launched):  # the launcher last
            client.close()
    assert all(c.child is None or c.child.poll() is not None for c in clients)


def test_connect_without_a_state_dir_finds_the_one_daemon_of_the_registry(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    env = {**os.environ, "SUPERVISOR_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("SUPERVISOR_STATE_DIR", None)
    probe = (
        "import json; from supervisor.client import Client\n"
        "with Client.connect() as c: print(json.dumps([c.daemon.pid, str(c.state_dir)]))"
    )
    with Client.launch(state, config=config, env=env) as sup:
        sup.wait(timeout_s=60)
        done = subprocess.run(
            [PYTHON, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True
        )
        assert json.loads(done.stdout) == [sup.daemon.pid, str(state)]


def test_restart_events_stop_start_and_refused_names(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    with Client.launch(state, config=config) as sup:
        (before,) = sup.wait("dashboard", timeout_s=60)
        with sup.subscribe("dashboard") as (snapshot, events):
            assert snapshot["dashboard"].state is State.READY
            (result,) = sup.restart("dashboard")
            assert (result.name, result.action, result.was) == ("dashboard", "restarted", "ready")
            seen = []
            for event in events:
                seen.append(event)
                if event.event == "ready":
                    break
        assert [e.event for e in seen] == ["stopping", "stopped", "starting", "spawned", "ready"]
        assert seen[-1].url == before.url and seen[-1].pid != before.pid
        assert before.pid is not None and pid_gone(before.pid)

        (stopped,) = sup.stop("dashboard")
        assert (stopped.action, stopped.state) == ("stopped", State.STOPPED)
        with pytest.raises(WaitTimeoutError) as timed_out:
            sup.wait("dashboard", timeout_s=0.3)
        assert timed_out.value.pending == {"dashboard": "stopped"}
        (started,) = sup.start("dashboard")
        assert started.action == "started"
        (again,) = sup.wait("dashboard", timeout_s=60)
        assert again.url is not None and healthy(again.url)

        with pytest.raises(UnknownSidecarError) as unknown:
            sup.restart("dashboard", "nope")
        assert unknown.value.names == ("nope",) and unknown.value.known == ("dashboard",)
        assert sup.status()["dashboard"].pid == again.pid  # nothing was done


def test_errors_not_running_launch_failed_and_sidecar_down(tmp_path: Path) -> None:
    with pytest.raises(NotRunningError) as not_running:
        Client.connect(tmp_path / "nothing")
    assert not_running.value.state_dir == tmp_path / "nothing"

    bad = tmp_path / "bad.toml"
    bad.write_text("[[sidecar]]\nname = 3\n")
    with pytest.raises(LaunchFailedError) as failed:
        Client.launch(tmp_path / "bad-state", config=bad)
    assert failed.value.returncode == 2 and failed.value.log_file == tmp_path / "supervisor.log"
    assert "daemon_start_failed" in failed.value.last_line

    crashy = sidecar_entry(
        "crashy", [PYTHON, "-c", "raise SystemExit(3)"], free_port(), restart={"max_attempts": 0}
    )
    config, state, _ = setup(tmp_path, crashy)
    with Client.launch(state, config=config) as sup, pytest.raises(SidecarDownError) as down:
        sup.wait(timeout_s=60)
    assert down.value.name == "crashy" and down.value.state == "failed"
    assert down.value.reason


@pytest.mark.anyio
async def test_async_launch_attach_wait_restart_and_events(tmp_path: Path) -> None:
    config, state, port = setup(tmp_path)
    async with await AsyncClient.launch(state, config=config) as sup:
        assert sup.launched
        (before,) = await sup.wait("dashboard", timeout_s=60)
        assert before.url == f"http://127.0.0.1:{port}/health" == await sup.url("dashboard")
        async with await AsyncClient.connect(state) as other:
            assert not other.launched
            assert (await other.status())["dashboard"].pid == before.pid
        async with await AsyncClient.launch(state, config=config) as attached:
            assert not attached.launched and attached.daemon.pid == sup.daemon.pid

        seen = []
        async with sup.subscribe() as (snapshot, events):
            assert snapshot.names == ("dashboard",)
            (result,) = await sup.restart("dashboard")
            assert result.action == "restarted"
            with anyio.fail_after(60):
                async for event in events:
                    seen.append(event.event)
                    if event.event == "ready":
                        break
        assert seen == ["stopping", "stopped", "starting", "spawned", "ready"]
        (after,) = await sup.wait(timeout_s=60)
        assert after.pid != before.pid

        await sup.stop("dashboard")
        with pytest.raises(WaitTimeoutError) as timed_out:
            await sup.wait("dashboard", timeout_s=0.3)
        assert timed_out.value.pending == {"dashboard": "stopped"}
        with pytest.raises(UnknownSidecarError):
            await sup.start("nope")
        await sup.start("dashboard")
        (again,) = await sup.wait("dashboard", timeout_s=60)
        assert again.ready
        daemon_pid = sup.daemon.pid
    assert pid_gone(daemon_pid)


@pytest.mark.anyio
async def test_async_events_end_when_the_daemon_exits(tmp_path: Path) -> None:
    config, state, _ = setup(tmp_path)
    sup = await AsyncClient.launch(state, config=config)
    await sup.wait(timeout_s=60)
    names = []
    async with sup.subscribe() as (_, events):
        await sup.aclose()  # stops the daemon: every subscriber hears daemon_stopping, then EOF
        with anyio.fail_after(60):
            names = [event.event async for event in events]
    assert names == ["daemon_stopping", "stopping", "stopped"], names
    with pytest.raises(NotRunningError):
        await AsyncClient.connect(state)
