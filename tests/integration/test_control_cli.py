"""The control commands from a terminal: start/stop/restart NAME, wait, events, status NAME, and
finding the daemon without flags (the per-user registry); every exit code, against real daemons
with three sidecars (the ones not named keep their pids).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from tests.support import (
    PYTHON,
    ROOT,
    ControlClient,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    live_tags,
    one_line,
    pid_gone,
    render_config,
    run_cli,
    sidecar_pids,
)

HTTP = {"probe": "http", "path": "/health"}


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """No state dir or config from the environment, a private registry and config home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env.update(
        SUPERVISOR_RUNTIME_DIR=str(tmp_path / "runtime"),
        XDG_CONFIG_HOME=str(tmp_path / "config-home"),
        XDG_STATE_HOME=str(tmp_path / "state-home"),
    )
    return env







def hinted(message: str) -> list[list[str]]:
    return [shlex.split(quoted) for quoted in re.findall(r'"(supervisor [^"]*)"', message)]


def three_config(tmp_path: Path, name: str = "supervisor.toml", **extra: object) -> Path:
    config = tmp_path / name
    config.write_text(
        render_config(
            [
                demo_sidecar("web", free_port(), ready=HTTP),
                demo_sidecar("api", free_port()),
                demo_sidecar("worker", free_port()),
            ],
            extra or None,
        )
    )
    return config


def ready_pids(daemon: Daemon) -> dict[str, int]:
    pids = {
        name: int(daemon.wait_for("sidecar_ready", sidecar=name)["pid"])
        for name in ("web", "api", "worker")
    }
    daemon.wait_for("control_listening")
    return pids


def current_pids(state: Path) -> dict[str, object]:
    with ControlClient(state) as client:
        return sidecar_pids(client)


# -- per-sidecar commands --------------------------------------------------------------------------


def test_stop_start_restart_and_status_of_one_sidecar(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state) as daemon:
        pids = ready_pids(daemon)
        sd = ("--state-dir", str(state))

        stopped = run_cli("stop", "api", *sd)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.startswith("api: stopped (was ready, now stopped")
        assert pid_gone(pids["api"])
        shown = run_cli("status", "api", "--json", *sd)
        assert shown.returncode == 0
        (api,) = json.loads(shown.stdout)["sidecars"]
        assert api["state"] == "stopped" and api["pid"] is None

        started = run_cli("start", "api", *sd)
        assert started.returncode == 0, started.stderr
        assert started.stdout.startswith("api: started (was stopped")
        waited = run_cli("wait", "api", "--timeout", "30", *sd)
        assert waited.returncode == 0, waited.stderr
        assert re.fullmatch(r"api: ready tcp://127\.0\.0\.1:\d+\n", waited.stdout)

        restarted = run_cli("restart", "web", *sd)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.startswith("web: restarted (was ready")
        assert pid_gone(pids["web"])
        waited = run_cli("wait", *sd)
        assert waited.returncode == 0, waited.stderr
        assert [line.split()[0] for line in waited.stdout.splitlines()] == [
            "web:",
            "api:",
            "worker:",
        ]
        assert "http://127.0.0.1:" in waited.stdout and "/health" in waited.stdout

        table = run_cli("status", "web", "worker", *sd)
        assert table.returncode == 0
        assert "web" in table.stdout and "worker" in table.stdout
        assert "api" not in table.stdout.split("\n", 1)[1]
        now = current_pids(state)
        assert now["worker"] == pids["worker"]
        assert now["web"] not in (None, pids["web"]) and now["api"] not in (None, pids["api"])
        assert daemon.stop() == 0


def test_an_unknown_name_is_exit_2_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state) as daemon:
        pids = ready_pids(daemon)
        for command in ("start", "stop", "restart", "status", "wait"):
            result = run_cli(command, "web", "nope", "--state-dir", str(state))
            assert result.returncode == 2, (command, result.stderr)
            message = one_line(result.stderr)
            assert "'nope'" in message and "web, api, worker" in message
        assert current_pids(state) == pids
        assert all(len(daemon.find("sidecar_spawned", sidecar=n)) == 1 for n in pids)
        assert daemon.stop() == 0


def test_commands_against_no_daemon_exit_3(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    env = isolated_env(tmp_path)
    for command in (
        ["start", "web"],
        ["stop", "web"],
        ["restart", "web"],
        ["status", "web"],
        ["wait"],
        ["wait", "web", "--timeout", "1"],
        ["events"],
        ["events", "--json"],
    ):
        result = run_cli(*command, "--state-dir", str(state), env=env)
        assert result.returncode == 3, (command, result.stderr)
        message = one_line(result.stderr)
        assert f"no supervisor is running for {state}" in message
        (run,) = hinted(message)
        assert run[:2] == ["supervisor", "run"] and run[-2:] == ["--state-dir", str(state)]


def test_wait_exits_1_naming_the_failed_sidecar_and_4_on_timeout(tmp_path: Path) -> None:
    held = free_port()
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("web", free_port()),
                {
                    "name": "broken",
                    "command": [PYTHON, "-c", "raise SystemExit(7)"],
                    "restart": {"max_attempts": 1, "base_delay": 0.01},
                },
                demo_sidecar("blocked", held),
            ]
        )
    )
    state = tmp_path / "state"
    sd = ("--state-dir", str(state))
    with Holder(held), Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="web")
        daemon.wait_for("control_listening")
        failed = run_cli("wait", *sd)
        assert failed.returncode == 1, failed.stderr
        message = one_line(failed.stderr)
        assert "'broken'" in message and "failed" in message and "gave up" in message
        (fix,) = hinted(message)
        assert fix == ["supervisor", "restart", "--state-dir", str(state), "broken"]

        daemon.wait_for("sidecar_waiting", sidecar="blocked")
        timed_out = run_cli("wait", "web", "blocked", "--timeout", "0.5", *sd)
        assert timed_out.returncode == 4, timed_out.stderr
        message = one_line(timed_out.stderr)
        assert "blocked (waiting)" in message and "web" not in message.split(";")[0]
        (see,) = hinted(message)
        assert run_cli(*see[1:]).returncode == 0  # works as printed

        assert run_cli("wait", "web", "--timeout", "5", *sd).returncode == 0
        assert daemon.stop() == 0


def test_wait_exits_3_when_the_daemon_goes_away_and_notes_a_stopped_sidecar(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state) as daemon:
        ready_pids(daemon)
        assert run_cli("stop", "api", "--state-dir", str(state)).returncode == 0
        waiter = subprocess.Popen(
            [PYTHON, "-m", "supervisor", "wait", "api", "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert waiter.stderr is not None
        note = waiter.stderr.readline()  # handshake: it has subscribed and seen "stopped"
        assert note.startswith("supervisor: note: api is stopped; waiting until started")
        (start,) = hinted(note)
        assert start == ["supervisor", "start", "--state-dir", str(state), "api"]
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(20) == 0
        _, err = waiter.communicate(timeout=20)
        assert waiter.returncode == 3, err
        assert "no supervisor is running" in one_line(err)


def test_stop_name_with_wait_exits_1_while_it_is_still_stopping(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("stubborn", free_port(), "--ignore-sigterm", stop={"timeout": 5.0}),
                demo_sidecar("web", free_port()),
            ]
        )
    )
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        stubborn = daemon.wait_for("sidecar_ready", sidecar="stubborn")["pid"]
        web = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
        daemon.wait_for("control_listening")
        result = run_cli("stop", "stubborn", "--wait", "0.3", "--state-dir", str(state))
        assert result.returncode == 1, result.stderr
        assert "still stopping after 0.3s" in one_line(result.stderr)
        # The daemon goes on with it: SIGKILL after stop.timeout.
        stopped = daemon.wait_for("sidecar_stopped", sidecar="stubborn", timeout=20)
        assert stopped["escalated"] is True and pid_gone(stubborn)
        assert current_pids(state) == {"stubborn": None, "web": web}
        assert daemon.stop() == 0


def read_lines(stream: object, count: int, until: str) -> list[str]:
    """Up to `count` lines, stopping after one that contains `until` (bounded by the caller)."""
    lines: list[str] = []
    assert hasattr(stream, "readline")
    while len(lines) < count:
        line = stream.readline()
        if not line:
            break
        lines.append(line)
        if until in line:
            break
    return lines


@pytest.mark.parametrize("as_json", [True, False])
def test_events_streams_state_changes_until_the_daemon_exits(as_json: bool, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state) as daemon:
        pids = ready_pids(daemon)
        follower = subprocess.Popen(
            [PYTHON, "-m", "supervisor", "events", "--state-dir", str(state)]
            + (["--json"] if as_json else []),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        try:
            daemon.wait_for("control_request", cmd="subscribe")  # handshake
            assert run_cli("restart", "worker", "--state-dir", str(state)).returncode == 0
            assert follower.stdout is not None
            box: list[list[str]] = []
            until = '"ready"' if as_json else " ready "
            reader = threading.Thread(
                target=lambda: box.append(read_lines(follower.stdout, 20, until)), daemon=True
            )
            reader.start()
            reader.join(30)
            (lines,) = box
            if as_json:
                events = [json.loads(line) for line in lines]
                assert [e["event"] for e in events] == [
                    "stopping", "stopped", "starting", "spawned", "ready",
                ]  # fmt: skip
                assert all(e["sidecar"] == "worker" for e in events)
                assert events[-1]["url"].startswith("tcp://127.0.0.1:")
            else:
                assert [line.split()[1:3] for line in lines] == [
                    ["worker", "stopping"], ["worker", "stopped"], ["worker", "starting"],
                    ["worker", "spawned"], ["worker", "ready"],
                ]  # fmt: skip
                assert "tcp://127.0.0.1:" in lines[-1]
            daemon.signal(signal.SIGTERM)
            out, err = follower.communicate(timeout=30)
            assert follower.returncode == 0, err
            assert err == ""
            assert ("daemon_stopping" in out) and out.rstrip("\n").count("\n") >= 3
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
        assert daemon.proc.wait(20) == 0
        assert pids["web"] and pid_gone(pids["web"])


# -- discovery -------------------------------------------------------------------------------------


def test_commands_without_flags_find_the_one_running_daemon(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    # Like config/demo.toml: a state dir of its own, that commands are not told about.
    config = three_config(tmp_path, state_dir="demo-state")
    state = tmp_path / "demo-state"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Daemon(config, state, env=env) as daemon:
        pids = ready_pids(daemon)
        shown = run_cli("status", env=env, cwd=elsewhere)
        assert shown.returncode == 0, shown.stderr
        assert f"supervisor pid {daemon.pid}" in shown.stdout and str(state) in shown.stdout
        assert run_cli("restart", "api", env=env, cwd=elsewhere).returncode == 0
        assert run_cli("wait", "api", "--timeout", "30", env=env, cwd=elsewhere).returncode == 0
        assert current_pids(state)["web"] == pids["web"]
        stopped = run_cli("stop", "--wait", "20", env=env, cwd=elsewhere)
        assert stopped.returncode == 0, stopped.stderr
        assert daemon.proc.wait(5) == 0
    # Gone from the registry; now nothing is found (and the message says where it looked).
    assert not list((tmp_path / "runtime").glob("daemon-*.json"))
    result = run_cli("status", env=env, cwd=elsewhere)
    assert result.returncode == 3
    one_line(result.stderr)


def test_several_daemons_status_lists_them_all_other_commands_exit_2(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    with (
        Daemon(three_config(tmp_path, "one.toml"), one, env=env) as first,
        Daemon(three_config(tmp_path, "two.toml"), two, env=env) as second,
    ):
        ready_pids(first)
        ready_pids(second)
        shown = run_cli("status", env=env)
        assert shown.returncode == 0, shown.stderr
        assert f"supervisor pid {first.pid}" in shown.stdout
        assert f"supervisor pid {second.pid}" in shown.stdout
        docs = json.loads(run_cli("status", "--json", env=env).stdout)
        assert sorted(d["supervisor"]["pid"] for d in docs) == sorted([first.pid, second.pid])
        for command in (["stop"], ["restart"], ["restart", "web"], ["wait"], ["events"],
                        ["reload"], ["status", "web"]):  # fmt: skip
            result = run_cli(*command, env=env)
            assert result.returncode == 2, (command, result.stderr)
            message = one_line(result.stderr)
            assert str(one) in message and str(two) in message
        (choose,) = hinted(message)
        chosen = run_cli(*choose[1:], env=env)
        assert chosen.returncode == 0 and str(one) in chosen.stdout
        # Naming one works as usual.
        assert run_cli("stop", "--state-dir", str(two), "--wait", "20", env=env).returncode == 0
        assert second.proc.wait(5) == 0
        alone = run_cli("status", "--json", env=env)
        assert json.loads(alone.stdout)["supervisor"]["pid"] == first.pid
        assert first.stop() == 0


def test_stale_and_foreign_registry_entries_are_ignored(tmp_path: Path) -> None:
    from supervisor.control import registry

    env = isolated_env(tmp_path)
    folder = tmp_path / "runtime"
    folder.mkdir(mode=0o700)
    # A daemon that is gone (an exited process's pid and create time) ...
    gone = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(30)"])
    gone_time = psutil.Process(gone.pid).create_time()
    gone.kill()
    gone.wait()
    dead_state = tmp_path / "dead"
    dead_entry = folder / registry.entry_name(dead_state)
    dead_entry.write_text(
        json.dumps({"pid": gone.pid, "create_time": gone_time, "state_dir": str(dead_state)})
    )
    # ... and a live process of ours that is not a supervisor, with a state dir whose
    # supervisor.pid names it (pid and create time right): it must never be signalled.
    sleeper = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(120)"])
    try:
        sleeping = psutil.Process(sleeper.pid)
        fake_state = tmp_path / "fake"
        fake_state.mkdir(mode=0o700)
        record = {
            "pid": sleeper.pid,
            "create_time": sleeping.create_time(),
            "state_dir": str(fake_state),
        }
        (fake_state / "supervisor.pid").write_text(json.dumps(record))
        fake_entry = folder / registry.entry_name(fake_state)
        fake_entry.write_text(json.dumps(record))
        (folder / "daemon-garbage.json").write_text("{not json")

        result = run_cli("status", env=env)
        assert result.returncode == 3, result.stdout
        one_line(result.stderr)
        assert not dead_entry.exists()  # provably stale: removed
        assert fake_entry.exists()  # alive: not ours to remove, just not a daemon
        for command in (["stop"], ["restart"], ["reload"], ["restart", "web"]):
            assert run_cli(*command, env=env).returncode == 3, command
            named = run_cli(*command, "--state-dir", str(fake_state), env=env)
            assert named.returncode == 3, (command, named.stderr)
        assert sleeping.is_running() and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()

    # With a real daemon beside them, it is the one found.
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state, env=env) as daemon:
        ready_pids(daemon)
        shown = run_cli("status", "--json", env=env)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["supervisor"]["pid"] == daemon.pid
        assert daemon.stop() == 0


def test_an_unsafe_registry_folder_is_not_used(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    target = tmp_path / "target"
    target.mkdir(mode=0o700)
    (tmp_path / "runtime").symlink_to(target, target_is_directory=True)
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state, env=env) as daemon:
        ready_pids(daemon)
        warned = daemon.wait_for("registry_unavailable", timeout=0)
        assert "symbolic link" in warned["error"]
        assert list(target.iterdir()) == []
        # Not findable without flags then (and a command says why, never "not running"),
        # but fully usable with them.
        unnamed = run_cli("status", env=env)
        assert unnamed.returncode == 2, unnamed.stderr
        assert "registry of running daemons" in one_line(unnamed.stderr)
        assert "symbolic link" in unnamed.stderr
        named = run_cli("status", "--state-dir", str(state), env=env)
        assert named.returncode == 0, named.stderr
        assert daemon.stop() == 0


@pytest.mark.skipif(sys.platform != "linux", reason="the fallback is Linux's (XDG)")
def test_without_xdg_runtime_dir_the_registry_falls_back_to_a_private_folder(
    tmp_path: Path,
) -> None:
    # Root in CI: no XDG_RUNTIME_DIR, often no /run/user/0. platformdirs then falls back to
    # <tmp>/runtime-<uid>, checked to be ours; TMPDIR points that at our tmp_path here.
    # (Empty counts as unset, and overrides the session's own registry for the daemon too.)
    env = {**isolated_env(tmp_path), "SUPERVISOR_RUNTIME_DIR": "", "XDG_RUNTIME_DIR": ""}
    env["TMPDIR"] = str(tmp_path)
    probe = subprocess.run(
        [PYTHON, "-c", "from supervisor.system import paths; print(paths.runtime_dir())"],
        capture_output=True, text=True, env=env, check=True, cwd=ROOT,
    )  # fmt: skip
    folder = Path(probe.stdout.strip())
    assert probe.stderr == ""  # platformdirs' warning is not ours to print
    if Path(f"/run/user/{os.getuid()}").is_dir():
        pytest.skip("this machine has a /run/user/<uid>: platformdirs uses it")
    assert folder.is_relative_to(tmp_path)
    state = tmp_path / "state"
    with Daemon(three_config(tmp_path), state, env=env) as daemon:
        ready_pids(daemon)
        info = os.stat(folder)
        assert info.st_uid == os.getuid() and info.st_mode & 0o077 == 0
        assert len(list(folder.glob("daemon-*.json"))) == 1
        shown = run_cli("status", "--json", env=env)
        assert json.loads(shown.stdout)["supervisor"]["pid"] == daemon.pid
        assert daemon.stop() == 0
    assert list(folder.glob("daemon-*.json")) == []


def test_start_and_restart_of_one_sidecar_are_interactive_launches(tmp_path: Path) -> None:
    """A live instance holds web's port: consent is asked at each per-sidecar start/restart
    (through the daemon's consent command), never at its crash restarts or waiting."""
    port, marker = free_port(), "live-instance-of-web"
    flag, proof = tmp_path / "granted", tmp_path / "asked"
    consent = ["sh", "-c", f'echo "$SUPERVISOR_HOLDER_PID" >> {proof}; test -e {flag}']
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar(
                    "web",
                    port,
                    marker=marker,
                    reclaim={"consent": "command", "consent_command": consent},
                ),
                demo_sidecar("api", free_port()),
            ]
        )
    )
    state = tmp_path / "state"
    sd = ("--state-dir", str(state))
    live = Holder(port, "127.0.0.1", "-", marker, env=live_tags())
    with live as holder, Daemon(config, state) as daemon:
        api = daemon.wait_for("sidecar_ready", sidecar="api")["pid"]
        daemon.wait_for("consent_declined", pid=holder.pid)  # the boot launch asked
        daemon.wait_for("sidecar_waiting", sidecar="web", verdict="live")
        daemon.wait_for("control_listening")

        assert run_cli("start", "web", *sd).returncode == 0  # waiting: relaunched, asked again
        daemon.wait_for("consent_declined", pid=holder.pid, count=2)
        daemon.wait_for("sidecar_waiting", sidecar="web", count=2)
        assert holder.untouched()

        flag.touch()
        restarted = run_cli("restart", "web", *sd)
        assert restarted.returncode == 0, restarted.stderr
        daemon.wait_for("consent_granted", pid=holder.pid)
        daemon.wait_for("live_holder_killed", pid=holder.pid)
        ready = daemon.wait_for("sidecar_ready", sidecar="web")
        assert not holder.alive()
        assert proof.read_text().split() == [str(holder.pid)] * 3
        assert all(e["interactive"] for e in daemon.find("sidecar_spawned", sidecar="web"))
        assert current_pids(state) == {"web": ready["pid"], "api": api}
        assert daemon.stop() == 0
