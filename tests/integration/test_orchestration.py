"""Orchestration with real processes (SPEC 11.2): dependencies, the log / exec / notify readiness
signals, the notify watchdog, env files and placeholders, port = "auto", and relocation.

Every wait is a handshake on the daemon's own log events (or a file a child writes), bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    free_port,
    pid_gone,
    read_json,
    render_config,
    run_cli,
    stamp_ns,
    wait_until,
)

APP = str(ROOT / "tests" / "helpers" / "orchapp.py")
FAST = {"restart": {"base_delay": 0.05, "max_delay": 0.2}, "stop": {"timeout": 2.0}}


def app(name: str, *args: str, **tables: object) -> dict[str, object]:
    entry: dict[str, object] = {"name": name, "command": [PYTHON, APP, *args], **FAST}
    entry.update(tables)
    return entry


def start(tmp_path: Path, sidecars: list[dict[str, object]]) -> Daemon:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars))
    return Daemon(config, tmp_path / "state")


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "supervisor", *args, "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


def index_of(daemon: Daemon, event: str, **fields: object) -> int:
    for index, candidate in enumerate(daemon.events):
        if candidate.get("event") == event and all(
            candidate.get(k) == v for k, v in fields.items()
        ):
            return index
    raise AssertionError(f"no {event} {fields}")


def sidecar_status(daemon: Daemon, name: str) -> dict[str, Any]:
    daemon.dump_status()
    doc = read_json(daemon.state_dir / "status.json")
    (record,) = [s for s in doc["sidecars"] if s["name"] == name]
    return dict(record)


@pytest.mark.parametrize(
    ("flags", "kinds"),
    [((), ["boot", "restart"]), (("--non-interactive",), ["unattended", "unattended"])],
)
def test_each_launch_says_its_kind(
    tmp_path: Path, flags: tuple[str, ...], kinds: list[str]
) -> None:
    config = tmp_path / "supervisor.toml"
    port = free_port()
    config.write_text(render_config([app("web", "--port", str(port), port=port)]))
    with Daemon(config, tmp_path / "state", *flags) as daemon:
        first = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
        os.kill(first, signal.SIGKILL)  # a crash: restarted with nobody asking
        daemon.wait_for("sidecar_ready", sidecar="web", count=2)
        spawned = daemon.find("sidecar_spawned", sidecar="web")
        assert [e["launch"] for e in spawned] == kinds
        assert [e["interactive"] for e in spawned] == [kinds[0] == "boot", False]
        assert daemon.stop() == 0


def test_a_three_level_chain_starts_in_order_and_stops_in_reverse(tmp_path: Path) -> None:
    db_port, api_port = free_port(), free_port()
    sidecars = [
        # Listed dependents first: the order comes from depends_on, not from the file.
        app("dashboard", depends_on={"api": "healthy"}),
        app(
            "api",
            "--port",
            "{port}",
            port=api_port,
            depends_on={"db": "ready"},
            health={"probe": "tcp", "interval": 0.3, "timeout": 0.3},
        ),
        app(
            "db",
            "--port",
            str(db_port),
            "--say",
            "db: accepting connections",
            ready={"probe": "log", "pattern": "accepting connections$"},
        ),
    ]
    with start(tmp_path, sidecars) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="dashboard")
        db_ready = daemon.wait_for("sidecar_ready", sidecar="db")
        api_spawned = daemon.wait_for("sidecar_spawned", sidecar="api")
        api_ready = daemon.wait_for("sidecar_ready", sidecar="api")
        dash_spawned = daemon.wait_for("sidecar_spawned", sidecar="dashboard")
        waits = {
            e["sidecar"]: (e["dependency"], e["condition"])
            for e in daemon.find("sidecar_waiting_dependency")
        }
        assert waits == {"api": ("db", "ready"), "dashboard": ("api", "healthy")}
        assert stamp_ns(db_ready) <= stamp_ns(api_spawned)
        # Out of a dependency wait a launch is a restart: it would never ask for consent.
        launches = {e["sidecar"]: e["launch"] for e in daemon.find("sidecar_spawned")}
        assert launches == {"db": "boot", "api": "restart", "dashboard": "restart"}
        # healthy = ready and a health check passed since: the first check is one interval on.
        assert stamp_ns(dash_spawned) - stamp_ns(api_ready) >= 0.3e9
        record = sidecar_status(daemon, "dashboard")
        assert record["depends_on"] == {"api": "healthy"} and record["waiting_for"] is None
        table = cli(tmp_path, "status")
        assert table.returncode == 0, table.stderr
        assert "DEPENDS" in table.stdout and "api:healthy" in table.stdout
        assert daemon.stop() == 0
    stopping = [e["sidecar"] for e in daemon.find("sidecar_stopping")]
    assert stopping == ["dashboard", "api", "db"]
    # Each one stopped before the next one was asked to.
    assert index_of(daemon, "sidecar_stopped", sidecar="dashboard") < index_of(
        daemon, "sidecar_stopping", sidecar="api"
    )
    assert index_of(daemon, "sidecar_stopped", sidecar="api") < index_of(
        daemon, "sidecar_stopping", sidecar="db"
    )


def test_a_failing_dependency_holds_its_dependents_waiting_and_start_starts_it(
    tmp_path: Path,
) -> None:
    db_port, api_port = free_port(), free_port()
    fixed = tmp_path / "fixed"
    sidecars = [
        app(
            "db",
            "--fail-unless",
            str(fixed),
            "--port",
            "{port}",
            port=db_port,
            restart={"max_attempts": 1, "base_delay": 0.05},
        ),
        app("api", "--port", "{port}", port=api_port, depends_on={"db": "ready"}),
    ]
    with start(tmp_path, sidecars) as daemon:
        daemon.wait_for("restart_budget_exhausted", sidecar="db")
        daemon.wait_for("sidecar_waiting_dependency", sidecar="api", dependency="db")
        wait_until(
            lambda: "(it is failed" in str(sidecar_status(daemon, "api")["reason"]),
            15.0,
            "api's reason to say that db failed",
        )
        record = sidecar_status(daemon, "api")
        assert record["state"] == "waiting"
        assert record["waiting_for"] == {"dependency": "db", "condition": "ready"}
        assert record["reason"].startswith('waiting for "db" to be ready (it is failed: gave up')
        assert not daemon.find("sidecar_spawned", sidecar="api")  # not started, not looping
        assert not daemon.find("restart_scheduled", sidecar="api")
        control = cli(tmp_path, "status", "--json")
        (api,) = [s for s in json.loads(control.stdout)["sidecars"] if s["name"] == "api"]
        assert api["waiting_for"] == {"dependency": "db", "condition": "ready"}
        # Fixed; `start api` starts what api needs first.
        fixed.touch()
        started = cli(tmp_path, "start", "api")
        assert started.returncode == 0, started.stderr
        assert "db: started as a dependency" in started.stdout
        daemon.wait_for("sidecar_ready", sidecar="api")
        assert index_of(daemon, "sidecar_ready", sidecar="db") < index_of(
            daemon, "sidecar_spawned", sidecar="api"
        )


def test_the_chain_example_runs_as_is(tmp_path: Path) -> None:
    example = ROOT / "examples" / "chain" / "supervisor.toml"
    with Daemon(example, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready", sidecar="dashboard", timeout=60.0)
        assert daemon.find("sidecar_completed", sidecar="migrate")
        assert daemon.find("sidecar_notified", sidecar="db", ready=True)
        waited = cli(tmp_path, "wait", "--timeout", "30")
        assert waited.returncode == 0, waited.stderr  # a completed task counts as done
        assert daemon.stop() == 0
    assert [e["sidecar"] for e in daemon.find("sidecar_stopping")] == ["dashboard", "api", "db"]


def test_a_migration_task_completes_before_the_api_starts(tmp_path: Path) -> None:
    ran = tmp_path / "migrated"
    sidecars = [
        app(
            "api",
            "--port",
            "{port}",
            port=free_port(),
            depends_on={"migrate": "completed"},
        ),
        app("migrate", "--touch", str(ran), "--exit", "0", restart={"policy": "never"}),
    ]
    with start(tmp_path, sidecars) as daemon:
        completed = daemon.wait_for("sidecar_completed", sidecar="migrate")
        assert completed["code"] == 0
        api_spawned = daemon.wait_for("sidecar_spawned", sidecar="api")
        daemon.wait_for("sidecar_ready", sidecar="api")
        assert stamp_ns(completed) <= stamp_ns(api_spawned)
        assert len(ran.read_text().split()) == 1  # it ran once
        assert sidecar_status(daemon, "migrate")["state"] == "completed"
        assert daemon.stop() == 0


def test_a_dependency_cycle_is_a_config_error_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                app("a", depends_on={"b": "ready"}),
                app("b", depends_on={"c": "started"}),
                app("c", depends_on={"a": "completed"}),
            ]
        )
    )
    for command in ("check-config", "run"):
        result = run_cli(
            command, "-c", str(config), env={"SUPERVISOR_STATE_DIR": str(tmp_path / "state")}
        )
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        # run's fatal error is a JSON event off a TTY; check-config prints the line as is
        text = json.loads(line)["error"] if line.startswith("{") else line
        assert 'sidecar "a": depends_on: dependency cycle: a -> b -> c -> a' in text


def test_log_readiness_waits_for_the_line_not_the_port(tmp_path: Path) -> None:
    port, gate = free_port(), tmp_path / "gate"
    sidecar = app(
        "web",
        "--port",
        "{port}",
        "--gate",
        str(gate),
        "--say",
        "web: listening on port",
        port=port,
        ready={"probe": "log", "pattern": r"listening on \w+"},
    )
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("sidecar_spawned")

        def answers() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_until(answers, 15.0, "the child to listen")  # a tcp probe would be ready now
        assert not daemon.find("sidecar_ready")
        gate.touch()
        ready = daemon.wait_for("sidecar_ready")
        assert ready["url"] == f"tcp://127.0.0.1:{port}"


def test_exec_readiness_runs_the_command_until_it_exits_0(tmp_path: Path) -> None:
    gate, checks = tmp_path / "gate", tmp_path / "checks"
    check = (
        "import os, sys; open(sys.argv[2], 'a').write('x\\n'); "
        "sys.exit(0 if os.path.exists(sys.argv[1]) else 1)"
    )
    sidecar = app(
        "worker",
        ready={"probe": "exec", "command": [PYTHON, "-c", check, str(gate), str(checks)]},
    )
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("sidecar_spawned")
        wait_until(lambda: checks.exists() and checks.read_text().count("x") >= 2, 15.0, "checks")
        assert not daemon.find("sidecar_ready")
        gate.touch()
        daemon.wait_for("sidecar_ready")


NOTIFY_STRANGER = textwrap.dedent(
    """
    import os, socket, sys
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1\\nSTATUS=I am not your child", sys.argv[1])
    print(os.getpid(), flush=True)
    """
)


def test_notify_readiness_from_the_child_and_never_from_a_stranger(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    sidecar = app(
        "notifier",
        "--gate",
        str(gate),
        "--notify",
        "--status",
        "warmed up",
        ready={"probe": "notify", "timeout": 30.0},
    )
    with start(tmp_path, [sidecar]) as daemon:
        spawned = daemon.wait_for("sidecar_spawned")
        sock_path = tmp_path / "state" / "notifier" / "notify.sock"
        assert sock_path.exists()
        stranger = subprocess.run(
            [PYTHON, "-c", NOTIFY_STRANGER, str(sock_path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        rejected = daemon.wait_for("notify_rejected", sender_pid=int(stranger.stdout))
        assert rejected["reason"] in (
            "the sender is not a process of this sidecar",
            "the sender exited before it could be identified",
        )
        assert not daemon.find("sidecar_ready")
        assert sidecar_status(daemon, "notifier")["notify_status"] is None
        gate.touch()
        ready = daemon.wait_for("sidecar_ready")
        assert ready["pid"] == spawned["pid"]
        assert sidecar_status(daemon, "notifier")["notify_status"] == "warmed up"


def test_a_notifier_that_never_says_ready_fails_at_the_timeout(tmp_path: Path) -> None:
    sidecar = app(
        "mute",
        ready={"probe": "notify", "timeout": 1.0},
        restart={"max_attempts": 0},
    )
    with start(tmp_path, [sidecar]) as daemon:
        failed = daemon.wait_for("sidecar_start_failed")
        assert failed["reason"] == "not ready within 1s (ready.timeout)"
        daemon.wait_for("restart_budget_exhausted")
        assert sidecar_status(daemon, "mute")["state"] == "failed"


def test_the_notify_watchdog_restarts_a_child_that_stops_pinging(tmp_path: Path) -> None:
    sidecar = app(
        "pinger",
        "--notify",
        "--pings",
        "3",
        ready={"probe": "notify"},
        health={"probe": "notify", "watchdog": 0.6},
    )
    with start(tmp_path, [sidecar]) as daemon:
        first = daemon.wait_for("sidecar_ready")
        unhealthy = daemon.wait_for("sidecar_unhealthy", pid=first["pid"])
        assert unhealthy["reason"] == "unhealthy: no WATCHDOG=1 within 0.6s (health.watchdog)"
        pings = [e for e in daemon.find("child_output") if e["line"].startswith("ping")]
        assert len(pings) >= 3  # it was pinging: silence, not absence, made it unhealthy
        second = daemon.wait_for("sidecar_ready", count=2)
        assert second["pid"] != first["pid"]
        assert daemon.find("restart_scheduled", attempt=1)


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="systemd-notify not installed")
def test_notify_readiness_from_systemd_notify_in_a_shell_script(tmp_path: Path) -> None:
    script = tmp_path / "serve.sh"
    # systemd-notify sends from its own pid: a child of the sidecar's shell, in its session.
    script.write_text(
        '#!/bin/sh\nsystemd-notify --ready --status="shell says hi"\nexec sleep 600\n'
    )
    script.chmod(0o755)
    sidecar: dict[str, object] = {
        "name": "shell",
        "command": [str(script)],
        "ready": {"probe": "notify"},
        **FAST,
    }
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("sidecar_ready")
        assert not daemon.find("notify_rejected")
        assert sidecar_status(daemon, "shell")["notify_status"] == "shell says hi"


def test_env_file_and_placeholders_reach_the_child(tmp_path: Path) -> None:
    (tmp_path / "app.env").write_text(
        "# settings\nexport MODE=production\nGREETING='hello # world'\nOVERRIDE=from-file\n"
    )
    report = tmp_path / "env.json"
    sidecar = app(
        "web",
        "--port",
        "{port}",
        "--env-report",
        str(report),
        port="auto",
        env_file="app.env",
        env={"OVERRIDE": "from-env", "SELF": "{name}@127.0.0.1:{port} in {state_dir}"},
    )
    with start(tmp_path, [sidecar]) as daemon:
        ready = daemon.wait_for("sidecar_ready")
        seen = read_json(report)
        port = int(seen["argv"][1])
        env = seen["env"]
        assert (env["MODE"], env["GREETING"], env["OVERRIDE"]) == (
            "production",
            "hello # world",
            "from-env",
        )
        state_dir = os.path.realpath(tmp_path / "state")
        assert env["SELF"] == f"web@127.0.0.1:{port} in {state_dir}"
        assert ready["url"] == f"tcp://127.0.0.1:{port}"
        assert daemon.find("sidecar_port_chosen", port=port)


@pytest.mark.parametrize("inherit", [False, True], ids=["bound-by-child", "inherited"])
def test_port_auto_is_chosen_once_and_kept_across_restarts(tmp_path: Path, inherit: bool) -> None:
    sidecar: dict[str, object] = {
        "name": "demo",
        "command": ["{python}", "-m", "supervisor.demo", "--port", "{port}"],
        "port": "auto",
        "ready": {"probe": "http", "path": "/health"},
        "socket": {"inherit": inherit},
        **FAST,
    }
    with start(tmp_path, [sidecar]) as daemon:
        first = daemon.wait_for("sidecar_ready")
        chosen = daemon.wait_for("sidecar_port_chosen")
        port = chosen["port"]
        assert first["url"] == f"http://127.0.0.1:{port}/health"
        if inherit:
            assert daemon.wait_for("socket_bound")["address"] == f"127.0.0.1:{port}"
        record = sidecar_status(daemon, "demo")
        assert (record["port"], record["url"]) == (port, first["url"])
        os.kill(first["pid"], signal.SIGKILL)
        second = daemon.wait_for("sidecar_ready", count=2)
        assert second["pid"] != first["pid"] and second["url"] == first["url"]
        assert len(daemon.find("sidecar_port_chosen")) == 1
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.")


def test_relocate_starts_on_a_free_port_and_leaves_the_stranger_alone(tmp_path: Path) -> None:
    port = free_port()
    with Holder(port) as stranger:
        sidecar = app(
            "web",
            "--port",
            "{port}",
            port=port,
            reclaim={"foreign": "relocate"},
        )
        with start(tmp_path, [sidecar]) as daemon:
            moved = daemon.wait_for("sidecar_relocated")
            new_port = moved["port"]
            assert moved["from_port"] == port and new_port != port
            assert moved["url"] == f"tcp://127.0.0.1:{new_port}"
            assert moved["holder_pid"] == stranger.pid
            ready = daemon.wait_for("sidecar_ready")
            assert ready["url"] == moved["url"]
            record = sidecar_status(daemon, "web")
            assert (record["port"], record["url"]) == (new_port, moved["url"])
            waited = cli(tmp_path, "wait", "web", "--timeout", "10")
            assert waited.returncode == 0, waited.stderr
            assert daemon.stop() == 0
        assert stranger.untouched()


def test_restart_of_a_dependency_leaves_its_dependents_running(tmp_path: Path) -> None:
    sidecars = [
        app("db", "--port", "{port}", port=free_port()),
        app("api", "--port", "{port}", port=free_port(), depends_on={"db": "ready"}),
    ]
    with start(tmp_path, sidecars) as daemon:
        api = daemon.wait_for("sidecar_ready", sidecar="api")
        db = daemon.wait_for("sidecar_ready", sidecar="db")
        restarted = cli(tmp_path, "restart", "db")
        assert restarted.returncode == 0, restarted.stderr
        db_again = daemon.wait_for("sidecar_ready", sidecar="db", count=2)
        assert db_again["pid"] != db["pid"]
        record = sidecar_status(daemon, "api")
        assert (record["state"], record["pid"]) == ("ready", api["pid"])
        assert len(daemon.find("sidecar_spawned", sidecar="api")) == 1


def test_reload_applies_dependency_changes(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    api = app("api", "--port", "{port}", port=free_port())
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([api]))
    with Daemon(config, tmp_path / "state") as daemon:
        first = daemon.wait_for("sidecar_ready", sidecar="api")
        # The reload adds a dependency that is not ready yet: api is restarted and waits for it.
        gated = app("cache", "--port", "{port}", "--gate", str(gate), port=free_port())
        config.write_text(render_config([{**api, "depends_on": {"cache": "ready"}}, gated]))
        daemon.signal(signal.SIGHUP)
        waiting = daemon.wait_for("sidecar_waiting_dependency", sidecar="api")
        assert (waiting["dependency"], waiting["condition"]) == ("cache", "ready")
        assert sidecar_status(daemon, "api")["state"] == "waiting"
        gate.touch()
        second = daemon.wait_for("sidecar_ready", sidecar="api", count=2)
        assert second["pid"] != first["pid"]
        assert index_of(daemon, "sidecar_ready", sidecar="cache") < index_of(
            daemon, "sidecar_spawned", sidecar="api", pid=second["pid"]
        )
        daemon.wait_for("config_reloaded")


def test_a_dependent_that_will_not_stop_never_makes_its_dependency_restart(
    tmp_path: Path,
) -> None:
    """The shutdown bound holds with dependencies: a dependent that ignores SIGTERM holds its
    dependency's stop until the bound; the SIGKILL then ends every sidecar's supervision, and
    nothing is spawned again. (The respawn window without that rule is a few ms: this checks the
    outcome, it does not reliably catch the rule's removal; see docs/reliability.md.)"""
    stubborn = {
        "name": "api",
        "command": [PYTHON, "-m", "supervisor.demo", "--port", "{port}", "--ignore-sigterm"],
        "port": free_port(),
        "depends_on": {"db": "ready"},
        "stop": {"timeout": 30.0},
    }
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [stubborn, app("db", "--port", "{port}", port=free_port())],
            {"shutdown_timeout": 1.0},
        )
    )
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready", sidecar="api")
        assert daemon.stop() == 0
    assert daemon.find("shutdown_timeout_exceeded")
    assert len(daemon.find("sidecar_spawned", sidecar="db")) == 1
    assert len(daemon.find("sidecar_spawned", sidecar="api")) == 1


def test_a_notify_socket_path_too_long_for_sun_path_falls_back_to_an_abstract_name(
    tmp_path: Path,
) -> None:
    from supervisor.system import notifysock

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    short = notifysock.NotifySocket.bind(tmp_path)
    long = notifysock.NotifySocket.bind(deep)
    try:
        assert short.address == str(tmp_path / "notify.sock")
        assert oct((tmp_path / "notify.sock").stat().st_mode & 0o777) == "0o600"
        assert long.address.startswith("@sidecar-supervisor/")
        assert not (deep / "notify.sock").exists()
    finally:
        short.close()
        long.close()
    assert not (tmp_path / "notify.sock").exists()


def test_a_hanging_exec_readiness_check_is_killed_with_its_group(tmp_path: Path) -> None:
    pids = tmp_path / "check-pids"
    # The check leaves a grandchild in its process group and hangs on it.
    hang = f"sleep 600 & echo $$ $! >> {pids}; wait"
    sidecar = app(
        "worker",
        ready={"probe": "exec", "command": ["sh", "-c", hang], "timeout": 1.0},
        restart={"max_attempts": 0},
    )
    with start(tmp_path, [sidecar]) as daemon:
        failed = daemon.wait_for("sidecar_start_failed")
        assert failed["reason"] == "not ready within 1s (ready.timeout)"
        daemon.wait_for("restart_budget_exhausted")
        checks = [int(pid) for line in pids.read_text().splitlines() for pid in line.split()]
        assert checks
        wait_until(lambda: all(pid_gone(pid) for pid in checks), 10.0, "the checks to be gone")
