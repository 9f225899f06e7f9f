"""What a newcomer meets: status after an unclean exit, fatal errors in the log's format on a
TTY and off one, colour on a TTY. Real daemons, real sidecars, a real pseudo-terminal."""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from tests import support
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    one_line,
    pid_gone,
    render_config,
)

cli = functools.partial(support.run_cli, clean=True)



# -- status after an unclean exit --------------------------------------------------------------


def sleeper(name: str) -> dict[str, object]:
    """A sidecar without a port: ready at spawn, holds nothing."""
    return {
        "name": name,
        "command": [PYTHON, "-c", "import time; time.sleep(300)"],
        "stop": {"timeout": 2.0},
    }


def test_status_after_an_unclean_exit_says_what_is_left_and_run_reclaims_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", port), sleeper("worker")]))
    state = tmp_path / "state"
    with Daemon(config, state) as first:
        web = first.wait_for("sidecar_ready", sidecar="web")["pid"]
        worker = first.wait_for("sidecar_ready", sidecar="worker")["pid"]
        first.wait_for("pidfile_written", sidecar="worker")
        first.wait_for("pidfile_written", sidecar="web")
        first.kill()  # SIGKILL: its sidecars survive, their PID files stay

    result = cli("status", "--state-dir", str(state))
    assert result.returncode == 3
    assert result.stdout == ""
    assert one_line(result.stderr) == (
        f"no supervisor is running for {state} (the last one did not exit cleanly), "
        f'but 2 of its sidecars still run: "web" (pid {web}) still holds port {port}, '
        f'"worker" (pid {worker}) still runs; '
        '"supervisor run" for this state dir will reclaim them'
    )
    as_json = cli("status", "--json", "--state-dir", str(state))
    assert as_json.returncode == 3 and as_json.stderr == result.stderr

    with Daemon(config, state) as second:
        if second.wait_for("daemon_started")["isolation"] == "cgroup":  # emptied before launch
            reclaimed = {
                second.wait_for("cgroup_leftovers_killed", count=n)["sidecar"] for n in (1, 2)
            }
            assert reclaimed == {"web", "worker"}
        else:
            killed = {second.wait_for("orphan_killed", count=n)["pid"] for n in (1, 2)}
            assert killed == {web, worker}
        second.wait_for("sidecar_ready", sidecar="web")
        second.wait_for("sidecar_ready", sidecar="worker")
        assert pid_gone(web) and pid_gone(worker)
        second.dump_status()
        status = cli("status", "--state-dir", str(state))
        assert status.returncode == 0, status.stderr
        assert second.stop() == 0
    after = cli("status", "--state-dir", str(state))
    assert after.returncode == 3
    assert "did not exit cleanly" not in after.stderr  # a clean exit leaves nothing behind


def _sidecar_pid_file(state: Path, name: str, record: Mapping[str, object]) -> None:
    folder = state / name
    folder.mkdir(mode=0o700, parents=True)
    (folder / "sidecar.pid").write_text(json.dumps(record))


def test_status_never_trusts_a_pid_file_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    me = psutil.Process()
    gone = {"pid": me.pid, "create_time": me.create_time() - 1000.0}  # a recycled pid
    (state / "supervisor.pid").write_text(json.dumps(gone))
    port = free_port()
    with Holder(port) as holder:
        # Our own live pid with another create time: what a recycled pid looks like.
        _sidecar_pid_file(state, "recycled", {**gone, "port": port, "supervisor_pid": me.pid})
        result = cli("status", "--state-dir", str(state))
        assert result.returncode == 3
        assert one_line(result.stderr).startswith(f"no supervisor is running for {state}; ")

        # The same holder recorded with its real create time is reported; its daemon is gone.
        _sidecar_pid_file(
            state,
            "web",
            {
                "pid": holder.pid,
                "create_time": holder.create_time,
                "port": port,
                "supervisor_pid": me.pid,
                "supervisor_create_time": me.create_time() - 1000.0,
            },
        )
        reported = one_line(cli("status", "--state-dir", str(state)).stderr)
        assert f'its sidecar "web" (pid {holder.pid}) still holds port {port}; ' in reported
        assert "recycled" not in reported

        # A record whose daemon still runs (here: this test's own process) is no leftover.
        record = json.loads((state / "web" / "sidecar.pid").read_text())
        record["supervisor_create_time"] = me.create_time()
        (state / "web" / "sidecar.pid").write_text(json.dumps(record))
        quiet = one_line(cli("status", "--state-dir", str(state)).stderr)
        assert "still" not in quiet


def test_status_says_when_run_would_not_reclaim_a_leftover(tmp_path: Path) -> None:
    # No supervisor.pid names its daemon, and it holds no port: no sweep will find it.
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with Holder(free_port()) as holder:
        _sidecar_pid_file(state, "worker", {"pid": holder.pid, "create_time": holder.create_time})
        message = one_line(cli("status", "--state-dir", str(state)).stderr)
    assert message.endswith(
        f'its sidecar "worker" (pid {holder.pid}) still runs; "supervisor run" for this state '
        f"dir reclaims the port holders, but stop the others yourself (kill {holder.pid})"
    )


# -- fatal start-up errors: JSON under JSON logs, a plain line on a TTY ------------------------


def test_second_daemon_exit_75_is_a_json_event_under_json_logs(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", free_port())]))
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready")
        plain = cli("run", "-c", str(config), "--state-dir", str(state), "--log-format", "console")
        second = cli("run", "-c", str(config), "--state-dir", str(state), "--log-format", "json")
        assert second.returncode == plain.returncode == 75
        lines = second.stderr.splitlines()
        assert len(lines) == 1, second.stderr
        event = json.loads(lines[0])
        assert event["event"] == "daemon_start_failed"
        assert event["exit_code"] == 75
        assert event["pid"] == daemon.pid
        assert event["state_dir"] == str(state)
        assert event["error"] == one_line(plain.stderr)
        assert daemon.stop() == 0


def on_tty(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    until: bytes | None = None,
    tty: bool = True,
    timeout: float = 20.0,
) -> tuple[int, bytes]:
    """Run `supervisor ARGS` with stderr on a pseudo-terminal (or a pipe); with `until`,
    SIGTERM it once that text appeared. Returns the exit code and everything it wrote."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    for name in ("NO_COLOR", "FORCE_COLOR", "TERM"):
        full_env.pop(name, None)
    full_env.update(env or {})
    master, slave = os.openpty() if tty else os.pipe()
    proc = subprocess.Popen(
        [PYTHON, "-m", "supervisor", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        cwd=ROOT,
        env=full_env,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    signalled = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no end of output within {timeout}s: {output!r}"
            ready, _, _ = select.select([master], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if until is not None and not signalled and until in output:
                proc.send_signal(signal.SIGTERM)
                signalled = True
        return proc.wait(timeout), output
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_on_a_tty_auto_start_failure_is_the_plain_line(tmp_path: Path) -> None:
    code, output = on_tty(["run", "-c", str(tmp_path / "missing.toml")])
    assert code == 2
    text = output.decode()
    assert text.startswith(f"supervisor: config {tmp_path / 'missing.toml'}: file not found; ")
    assert text.count("\n") == 1


def test_on_a_tty_a_json_config_makes_the_start_failure_json(tmp_path: Path) -> None:
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    config = tmp_path / "supervisor.toml"
    config.write_text(f'[supervisor]\nlog_format = "json"\nstate_dir = "{blocker}"\n')
    code, output = on_tty(["run", "-c", str(config)])
    assert code == 2
    (line,) = output.decode().splitlines()
    assert json.loads(line)["event"] == "daemon_start_failed"


# -- colour ------------------------------------------------------------------------------------

ESC = b"\x1b["


def _console_run(tmp_path: Path) -> list[str]:
    config = tmp_path / "supervisor.toml"
    config.write_text("")
    return ["run", "-c", str(config), "--state-dir", str(tmp_path / "state")]


def test_console_log_on_a_tty_is_coloured(tmp_path: Path) -> None:
    code, output = on_tty(_console_run(tmp_path), until=b"0/0 ready")
    assert code == 0
    assert b"stopped" in output
    assert ESC in output


def test_no_color_turns_colour_off_on_a_tty(tmp_path: Path) -> None:
    code, output = on_tty(_console_run(tmp_path), env={"NO_COLOR": "1"}, until=b"0/0 ready")
    assert code == 0
    assert b"supervisor  stopped" in output
    assert ESC not in output


def test_force_color_colours_console_logs_off_a_tty(tmp_path: Path) -> None:
    args = [*_console_run(tmp_path), "--log-format", "console"]
    code, plain = on_tty(args, until=b"0/0 ready", tty=False)
    assert code == 0
    assert b"supervisor  stopped" in plain and ESC not in plain
    code, forced = on_tty(args, env={"FORCE_COLOR": "1"}, until=b"0/0 ready", tty=False)
    assert code == 0
    assert b"stopped" in forced and ESC in forced
