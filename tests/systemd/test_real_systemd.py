"""The systemd user unit under a real systemd (252, PID 1 in private namespaces).

One container boot runs scenario.py as real-systemd's throwaway user; it prints one JSON record
per check and each test below asserts on one of them. Needs root and the real-systemd tool
(`$REAL_SYSTEMD_RUN`, else `<repo>/../shared/tools/real-systemd/run`); skips without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.systemd import scenario as inside

pytestmark = pytest.mark.root

HERE = Path(__file__).resolve().parent  # scenario.py is copied from here into the container
REPO = HERE.parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")  # one the throwaway user can run (not a /root pyenv)
TOOL_UNAVAILABLE = 77
RUN_TIMEOUT_S = 300
BUILD_TIMEOUT_S = 300
_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", ".hypothesis", ".demo-state", "tests", "bench",
)  # fmt: skip

Record = Mapping[str, Any]  # one check's JSON record


def _tool() -> Path:
    configured = os.environ.get("REAL_SYSTEMD_RUN")
    return Path(configured) if configured else REPO.parent / "shared/tools/real-systemd/run"


def _require_real_systemd() -> Path:
    if sys.platform != "linux":
        pytest.skip("real systemd: Linux only")
    if os.geteuid() != 0:
        pytest.skip("real systemd: needs root (the container runs as root on the host)")
    tool = _tool()
    if not os.access(tool, os.X_OK):
        pytest.skip(f"real systemd: no tool at {tool} (set REAL_SYSTEMD_RUN)")
    if not os.access(SYSTEM_PYTHON, os.X_OK) or shutil.which("timeout") is None:
        pytest.skip(f"real systemd: needs {SYSTEM_PYTHON} and timeout(1)")
    check = subprocess.run(
        ["timeout", "-k", "5", "30", str(tool), "--check", "--user"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if check.returncode != 0:
        pytest.skip(f"real systemd: {check.stderr.strip() or f'--check exited {check.returncode}'}")
    return tool


def _run(argv: list[str], log: Path, **kwargs: Any) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(
            ["timeout", "-k", "10", str(BUILD_TIMEOUT_S), *argv],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False, **kwargs,
        )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"building the venv failed (exit {done.returncode}):\n{log.read_text()}")


def _build_venv(root: Path) -> Path:
    """A venv on the system Python with a copy of this checkout installed, as a user installs it.

    A copy, because building writes build/ and *.egg-info into the source tree. Fast path (about
    6 s instead of 13): no pip inside the venv, the wheel built by this test run's interpreter
    (its setuptools is the one pyproject.toml asks for; Debian's is too old for SPDX licenses)
    and installed by the system's pip.
    """
    src, venv, wheels, log = root / "src", root / "venv", root / "wheels", root / "build.log"
    shutil.copytree(REPO, src, ignore=_COPY_IGNORE)
    # (setuptools first: Debian's pip imports the stdlib distutils, which setuptools refuses.)
    has_tools = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import setuptools, wheel, pip"],
        capture_output=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    if has_tools.returncode == 0:
        pip = [str(SYSTEM_PYTHON), "-m", "pip", "-q"]
        build = [sys.executable, "-m", "pip", "-q", "wheel", "--no-deps", "--no-build-isolation"]
        _run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)], log)
        _run([*build, "-w", str(wheels), str(src)], log)
        built = sorted(str(w) for w in wheels.glob("*.whl"))
        _run([*pip, "--python", str(venv / "bin" / "python"), "install", *built], log)
    else:  # like real-systemd's example-demo.sh
        _run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], log)
        _run([str(venv / "bin" / "python"), "-m", "pip", "-q", "install", str(src)], log)
    return venv


@dataclass(frozen=True)
class Scenario:
    checks: Mapping[str, Record]
    returncode: int
    stderr: str
    build_s: float
    run_s: float

    def check(self, name: str) -> Record:
        record = self.checks.get(name)
        if record is None:
            pytest.fail(
                f"the scenario never reported {name!r} (exit {self.returncode}); "
                f"stderr:\n{self.stderr[-4000:]}"
            )
        if "error" in record:
            pytest.fail(f"check {name!r} broke inside the container:\n{record['error']}")
        return record

    def journal(self, began_at: float, ended_at: float, lines: int = 60) -> str:
        """The unit's journal lines between two CLOCK_MONOTONIC times (its last lines at most)."""
        text = str(self.checks.get("journal", {}).get("text", ""))
        window = []
        for line in text.splitlines():
            stamp = _MONOTONIC_STAMP.match(line)
            if stamp is not None and began_at <= float(stamp.group(1)) <= ended_at:
                window.append(line)
        return "\n".join(window[-lines:])


_MONOTONIC_STAMP = re.compile(r"^\[\s*(\d+\.\d+)\]")  # journalctl -o short-monotonic


def explain(scenario: Scenario, record: Record) -> str:
    """A failed assertion's context: the check's record and the journal of its phase."""
    shown = {k: v for k, v in record.items() if k not in ("unit_text", "stdout")}
    details = json.dumps(shown, indent=1, default=str)
    # A little slack for lines journald receives just after the phase ended.
    journal = scenario.journal(float(record["began_at"]), float(record["ended_at"]) + 0.05)
    return f"{details}\n--- the unit's journal during this check ---\n{journal}"


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    tool = _require_real_systemd()
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, out of the throwaway user's reach.
    root = Path(tempfile.mkdtemp(prefix="sidecar-real-systemd-", dir="/tmp"))
    try:
        root.chmod(0o755)
        started = time.monotonic()
        venv = _build_venv(root)
        shutil.copy2(HERE / "scenario.py", root / "scenario.py")
        built = time.monotonic()
        argv = [str(SYSTEM_PYTHON), str(root / "scenario.py"), "--venv", str(venv)]
        # timeout(1) sends SIGTERM, which the tool turns into a clean teardown; -k bounds even
        # that (subprocess's own timeout would SIGKILL the tool and leave its cgroup behind).
        proc = subprocess.run(
            ["timeout", "-k", "30", str(RUN_TIMEOUT_S), str(tool), "--user", "--ro-bind",
             str(root), "--", *argv],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=root, check=False,
        )  # fmt: skip
        finished = time.monotonic()
        if proc.returncode == TOOL_UNAVAILABLE:
            pytest.skip(f"real systemd: {proc.stderr.strip()}")
        checks: dict[str, Record] = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                checks[record["check"]] = record
        result = Scenario(checks, proc.returncode, proc.stderr, built - started, finished - built)
        print(f"real systemd: venv built in {result.build_s:.1f} s, ran {result.run_s:.1f} s")
        yield result
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- 1. install --------------------------------------------------------------------------------


def test_service_install_writes_a_unit_systemd_loads(scenario: Scenario) -> None:
    record = scenario.check("install")
    props = record["props"]
    assert record["rc"] == 0, explain(scenario, record)
    assert record["daemon_reload_rc"] == 0, explain(scenario, record)
    assert props["LoadState"] == "loaded", explain(scenario, record)
    assert props["FragmentPath"] == record["unit_file"], explain(scenario, record)
    # The venv's own interpreter and the absolute config path.
    expected = f"argv[]={record['venv_python']} -P -m supervisor run -c {record['config']} "
    assert expected in props["ExecStart"], explain(scenario, record)


def test_unit_is_notify_mixed_and_restarts_on_failure(scenario: Scenario) -> None:
    record = scenario.check("install")
    props = record["props"]
    assert props["Type"] == "notify", explain(scenario, record)
    assert props["NotifyAccess"] == "main", explain(scenario, record)
    assert props["KillMode"] == "mixed", explain(scenario, record)
    assert props["Restart"] == "on-failure", explain(scenario, record)
    assert set(props["RestartPreventExitStatus"].split()) >= {"2", "75"}, explain(scenario, record)


# -- 2, 3. start returns once the sidecars serve ----------------------------------------------


def test_start_returns_once_the_sidecar_answers(scenario: Scenario) -> None:
    record = scenario.check("start")
    assert record["rc"] == 0, explain(scenario, record)
    assert record["active_state"] == "active", explain(scenario, record)
    # One GET right after `systemctl start` returned, no retry.
    assert record["health_at_return"] == 200, explain(scenario, record)


def test_status_line_shows_the_sidecar_ready(scenario: Scenario) -> None:
    record = scenario.check("start")
    assert record["serves_eventually"], explain(scenario, record)
    assert record["status_text_ready"] is not None, explain(scenario, record)
    assert "demo: ready" in record["status_text_ready"], explain(scenario, record)


def test_start_waits_for_a_sidecar_that_takes_3_s_to_listen(scenario: Scenario) -> None:
    record = scenario.check("slow_start")
    assert record["rc"] == 0, explain(scenario, record)
    assert record["active_state"] == "active", explain(scenario, record)
    # Lower bounds of a wait that must happen (correctness, not speed): the sidecar listens only
    # SLOW_LISTEN_DELAY_S after it was spawned, and start must not return before that.
    assert record["elapsed_s"] >= inside.SLOW_LISTEN_DELAY_S, explain(scenario, record)
    assert "sidecar_listened_at" in record, explain(scenario, record)
    assert record["returned_at"] >= record["sidecar_listened_at"], explain(scenario, record)
    assert record["health_at_return"] == 200, explain(scenario, record)


# -- 4. reload ---------------------------------------------------------------------------------


def test_exec_reload_is_reload_wait(scenario: Scenario) -> None:
    record = scenario.check("reload")
    # e.g. "{ path=/bin/kill ; argv[]=/bin/kill -HUP $MAINPID ; ignore_errors=no ; ... }"
    argv = re.findall(r"argv\[\]=([^;]*)", str(record["exec_reload"]))
    assert argv, explain(scenario, record)
    words = argv[0].split()
    assert "reload" in words, explain(scenario, record)
    assert "supervisor" in words or any(w.endswith("/supervisor") for w in words), explain(
        scenario, record
    )
    assert "--wait" in words, explain(scenario, record)


def test_reload_keeps_an_unchanged_sidecar(scenario: Scenario) -> None:
    record = scenario.check("reload")
    assert record["rc"] == 0, explain(scenario, record)
    before, after = record["demo_before"], record["demo_eventually"]
    assert before is not None, explain(scenario, record)
    assert before["state"] == "ready", explain(scenario, record)
    assert after is not None, explain(scenario, record)
    assert after["pid"] == before["pid"], explain(scenario, record)
    assert record["main_pid_after"] == record["main_pid_before"], explain(scenario, record)


def test_reload_returns_once_the_added_sidecar_is_applied(scenario: Scenario) -> None:
    record = scenario.check("reload")
    assert record["rc"] == 0, explain(scenario, record)
    # status.json, read at once when `systemctl reload` returned, lists the added sidecar (in
    # whatever state: the stricter reading is the next test's).
    assert record["second_in_status_file_at_return"] is not None, explain(scenario, record)


def test_reload_returns_once_the_added_sidecar_answers(scenario: Scenario) -> None:
    record = scenario.check("reload")
    assert record["second_eventually"] is not None, explain(scenario, record)  # reload works
    # As for start (READY=1): the reload is complete when the sidecars it added serve.
    assert record["second_health_at_return"] == 200, explain(scenario, record)


# -- 5. stop -----------------------------------------------------------------------------------


def test_stop_empties_the_cgroup_and_closes_the_ports(scenario: Scenario) -> None:
    record = scenario.check("stop")
    assert record["rc"] == 0, explain(scenario, record)
    # The cgroup read before the stop held the daemon and its sidecars: the path is right.
    assert isinstance(record["procs_before"], list), explain(scenario, record)
    assert int(record["main_pid"]) in record["procs_before"], explain(scenario, record)
    assert len(record["procs_before"]) >= 2, explain(scenario, record)
    assert record["procs_after"] == [], explain(scenario, record)
    # Delegate=yes: the daemon moved into its own leaf, each sidecar has a cgroup beside it.
    group = record["control_group"]
    assert record["daemon_cgroup"] == f"{group}/supervisor", explain(scenario, record)
    assert record["sidecar_cgroups"], explain(scenario, record)
    for name, (isolation, cgroup) in record["sidecar_cgroups"].items():
        assert isolation == "cgroup", explain(scenario, record)
        assert re.fullmatch(rf"{re.escape(group)}/s-[0-9a-f]{{16}}/{name}", cgroup or ""), (
            explain(scenario, record)
        )
    assert record["leftover_processes"] == [], explain(scenario, record)
    answers = record["health_after"].values()
    assert all("ConnectionRefused" in str(a) for a in answers), explain(scenario, record)
    props = record["props_after"]
    assert props["ActiveState"] == "inactive", explain(scenario, record)
    # The daemon stopped everything itself and exited 0: systemd had nothing left to SIGKILL.
    assert props["Result"] == "success", explain(scenario, record)
    assert props["ExecMainStatus"] == "0", explain(scenario, record)


# -- 6. kill -9 --------------------------------------------------------------------------------


def test_killed_daemon_is_restarted_and_serves_again(scenario: Scenario) -> None:
    record = scenario.check("kill9")
    assert record["start_rc"] == 0, explain(scenario, record)
    assert record["served_before"], explain(scenario, record)
    restarted = record["restarted"]
    assert restarted is not None, explain(scenario, record)
    assert int(restarted["NRestarts"]) == record["n_restarts_before"] + 1, explain(scenario, record)
    assert int(restarted["MainPID"]) != record["main_pid_before"], explain(scenario, record)
    assert record["serves_again"], explain(scenario, record)


# -- 7. config error ---------------------------------------------------------------------------


def test_config_error_is_not_restarted(scenario: Scenario) -> None:
    record = scenario.check("config_error")
    assert record["check_config_rc"] == 2, explain(scenario, record)  # it is a config error
    assert record["rc"] != 0, explain(scenario, record)  # `systemctl start` reports the failure
    props = record["props_at_return"]
    assert props["ExecMainStatus"] == "2", explain(scenario, record)
    assert props["ActiveState"] == "failed", explain(scenario, record)
    assert props["SubState"] == "failed", explain(scenario, record)  # not auto-restart
    assert props["NRestarts"] == "0", explain(scenario, record)
    assert not record["restart_seen"], explain(scenario, record)
    assert record["n_restarts_seen"] == [0], explain(scenario, record)
    assert record["props_after_window"]["ActiveState"] == "failed", explain(scenario, record)


# -- 8. watchdog -------------------------------------------------------------------------------


def test_watchdog_keeps_a_healthy_daemon(scenario: Scenario) -> None:
    record = scenario.check("watchdog_alive")
    assert record["start_rc"] == 0, explain(scenario, record)
    assert record["watchdog_usec"] == f"{inside.WATCHDOG_S}s", explain(scenario, record)
    assert record["served"], explain(scenario, record)
    assert not record["changed"], explain(scenario, record)
    assert record["main_pids_seen"] == [record["main_pid"]], explain(scenario, record)
    assert record["n_restarts_seen"] == [record["n_restarts_before"]], explain(scenario, record)
    assert record["watchdog_timeouts_logged"] == 0, explain(scenario, record)


def test_watchdog_restarts_a_stopped_daemon(scenario: Scenario) -> None:
    record = scenario.check("watchdog_restart")
    restarted = record["restarted"]
    assert restarted is not None, explain(scenario, record)
    assert int(restarted["NRestarts"]) == record["n_restarts_before"] + 1, explain(scenario, record)
    assert int(restarted["MainPID"]) != record["main_pid_before"], explain(scenario, record)
    assert record["watchdog_timeouts_logged"] == 1, explain(scenario, record)
    assert record["serves_again"], explain(scenario, record)
