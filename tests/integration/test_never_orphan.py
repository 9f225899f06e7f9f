"""The daemon outlives its own output, bad configs and stuck children: it never orphans a sidecar.

Each test drives a real daemon the way an app does (pipes it closes, never reads, or fills; a
launcher that vanishes) and checks that supervision goes on (a SIGKILLed child comes back) and
that after the stop nothing of any sidecar remains. Where the daemon's stderr is dead, the tests
watch status.json and the PID files instead of the log.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    _readline,
    daemon_command,
    demo_sidecar,
    free_port,
    pid_gone,
    read_status,
    run_script,
    stamp_ns,
    wait_until,
    write_config,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def sidecar_entry(state: Path, name: str) -> dict[str, Any]:
    for entry in read_status(state).get("sidecars", []):
        if entry.get("name") == name:
            return dict(entry)
    return {}


def wait_ready_pid(state: Path, name: str, *, other_than: int | None = None) -> int:
    """Handshake through status.json (the log may be dead): `name` ready with a new pid."""

    def ready() -> bool:
        entry = sidecar_entry(state, name)
        return entry.get("state") == "ready" and entry.get("pid") not in (None, other_than)

    wait_until(ready, 20.0, f"{name} ready in status.json")
    pid: int = sidecar_entry(state, name)["pid"]
    return pid


def group_gone(pgid: int) -> bool:
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def _all_gone(pid: int) -> bool:
    return pid_gone(pid) and group_gone(pid)


def assert_nothing_left(state: Path, pids: list[int]) -> None:
    for pid in pids:
        wait_until(functools.partial(_all_gone, pid), 10.0, f"group {pid} gone")
    assert not list(state.glob("*/sidecar.pid"))
    assert not (state / "supervisor.pid").exists()


# -- the app's pipes ----------------------------------------------------------------------------

# An app as Node.js launches it: stdio piped, the log read until `sidecar_ready`, then the app
# either exits at once (os._exit: no cleanup at all) or stays but closes its end of the pipe.
LAUNCHER = textwrap.dedent(
    """
    import json, os, subprocess, sys
    mode, argv = sys.argv[1], sys.argv[2:]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    for raw in proc.stderr:
        event = json.loads(raw)
        if event.get("event") == "sidecar_ready":
            break
    print(proc.pid, event["pid"], flush=True)
    if mode == "exit":
        os._exit(0)
    proc.stderr.close()
    proc.stdout.close()
    sys.stdin.readline()  # the test has stopped the daemon: report how it exited
    print(proc.wait(), flush=True)
    """
)


@contextlib.contextmanager
def launched(mode: str, argv: list[str]) -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    launcher = subprocess.Popen(
        [PYTHON, "-c", LAUNCHER, mode, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert launcher.stdout is not None and launcher.stdin is not None
    daemon_pid: int | None = None
    try:
        raw = _readline(launcher.stdout, 30.0)  # bounded: a daemon never ready must not hang
        line = raw if isinstance(raw, str) else raw.decode()
        assert line.strip(), "the launcher reported no ready daemon within 30 s"
        daemon_pid, child_pid = (int(word) for word in line.split())
        yield launcher, daemon_pid, child_pid
    finally:
        with contextlib.suppress(OSError):
            launcher.stdin.close()
        try:
            launcher.wait(20)
        except subprocess.TimeoutExpired:
            launcher.kill()
            if daemon_pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(daemon_pid, signal.SIGTERM)  # stops its sidecars too
            launcher.wait(10)
        launcher.stdout.close()


@linux_only
def test_app_exiting_right_after_ready_leaves_no_sidecar_behind(tmp_path: Path) -> None:
    """exit-with-parent, and the launcher's pipes die with it: EPIPE on the daemon's very next
    log line (`parent_exited`) must not stop it from stopping its sidecars."""
    state = tmp_path / "state"
    config = write_config(tmp_path, [demo_sidecar("web", free_port(), "--fork-grandchild")])
    argv = daemon_command(config, state, "--exit-with-parent")
    with launched("exit", argv) as (_, daemon_pid, child_pid):
        daemon = psutil.Process(daemon_pid)  # reparented to pytest, a subreaper
        assert daemon.wait(timeout=20) == 0
    assert_nothing_left(state, [child_pid])


@linux_only
def test_closed_stderr_costs_log_lines_not_supervision(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    with launched("close", daemon_command(config, state)) as (launcher, daemon_pid, child_pid):
        wait_ready_pid(state, "web")
        os.kill(child_pid, signal.SIGKILL)  # every log line about this now hits EPIPE
        second = wait_ready_pid(state, "web", other_than=child_pid)
        os.kill(daemon_pid, signal.SIGTERM)
        assert launcher.stdin is not None and launcher.stdout is not None
        launcher.stdin.write("stopped\n")
        launcher.stdin.flush()
        assert launcher.stdout.readline().strip() == "0"  # the daemon's exit code
    assert_nothing_left(state, [child_pid, second])


CHATTY = textwrap.dedent(
    """
    import os, socket, sys
    sock = socket.socket(); sock.bind(("127.0.0.1", int(sys.argv[1]))); sock.listen()
    line = b"x" * 200 + b"\\n"
    while True:
        os.write(1, line * 64)
    """
)


@linux_only
def test_stderr_that_nobody_reads_never_stalls_supervision(tmp_path: Path) -> None:
    """A pipe nobody drains fills in milliseconds under a chatty child: a SIGKILLed sidecar
    still comes back, status stays true and `supervisor stop --wait` succeeds."""
    state = tmp_path / "state"
    chatty_port = free_port()
    chatty: dict[str, Any] = {
        "name": "chatty",
        "command": [PYTHON, "-c", CHATTY, str(chatty_port)],
        "port": chatty_port,
    }
    config = write_config(tmp_path, [chatty, demo_sidecar("web", free_port())])
    proc = subprocess.Popen(
        daemon_command(config, state),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # never read
        cwd=ROOT,
    )
    try:
        first = wait_ready_pid(state, "web")
        wait_ready_pid(state, "chatty")
        assert proc.stderr is not None
        wait_until(lambda: _pipe_full(proc.pid), 20.0, "the daemon's stderr pipe to fill up")
        os.kill(first, signal.SIGKILL)
        second = wait_ready_pid(state, "web", other_than=first)
        stop = subprocess.run(
            [PYTHON, "-m", "supervisor", "stop", "--state-dir", str(state), "--wait", "20"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert stop.returncode == 0, stop.stderr
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert_nothing_left(state, [first, second])


def _pipe_full(pid: int) -> bool:
    """The daemon's stderr pipe holds 64 KiB (its capacity): its writer is stuck in write()."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return False
    if not target.startswith("pipe:"):
        return False
    import fcntl
    import termios

    fd = os.open(f"/proc/{pid}/fd/2", os.O_RDONLY | os.O_NONBLOCK)
    try:
        size = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, size)
        return int.from_bytes(size, sys.byteorder) >= 60_000
    finally:
        os.close(fd)


@linux_only
@pytest.mark.root
def test_stderr_on_a_full_disk_costs_log_lines_not_supervision(tmp_path: Path) -> None:
    from tests.integration.test_hostile import fill, tiny_tmpfs

    state = tmp_path / "state"
    config = write_config(tmp_path, [demo_sidecar("web", free_port(), "--fork-grandchild")])
    with tiny_tmpfs(tmp_path / "disk") as disk:
        with open(disk / "daemon.log", "ab") as log:
            fill(disk)  # every write to the log file now fails with ENOSPC
            proc = subprocess.Popen(
                daemon_command(config, state), stdin=subprocess.DEVNULL, stderr=log, cwd=ROOT
            )
        try:
            first = wait_ready_pid(state, "web")
            os.kill(first, signal.SIGKILL)
            second = wait_ready_pid(state, "web", other_than=first)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert_nothing_left(state, [first, second])


# -- configs that crash a parser ----------------------------------------------------------------


def test_a_config_that_crashes_the_parser_is_config_invalid_on_reload(tmp_path: Path) -> None:
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    with Daemon(config, tmp_path / "state") as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        good = config.read_text()
        config.write_text("a = " + "{b = " * 600 + "1" + "}" * 600 + "\n")
        daemon.signal(signal.SIGHUP)
        invalid = daemon.wait_for("config_invalid")
        assert "nested too deeply" in invalid["error"]
        status = daemon.dump_status()["status"]
        assert [(s["name"], s["state"], s["pid"]) for s in status["sidecars"]] == [
            ("web", "ready", pid)
        ]
        config.write_text(good)
        assert daemon.stop() == 0
    assert pid_gone(pid)


def test_check_config_reports_a_parser_crash_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "deep.toml"
    config.write_text("a = " + "{b = " * 600 + "1" + "}" * 600 + "\n")
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "nested too deeply" in result.stderr


# -- shutdown ahead of queued work, within its bound --------------------------------------------


def test_sigterm_goes_ahead_of_queued_restarts_and_keeps_its_bound(tmp_path: Path) -> None:
    shutdown_timeout = 3.0
    stubborn = demo_sidecar("stubborn", free_port(), "--ignore-sigterm", stop={"timeout": 30.0})
    config = write_config(tmp_path, [stubborn], shutdown_timeout=shutdown_timeout)
    with Daemon(config, tmp_path / "state") as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        for _ in range(20):
            daemon.signal(signal.SIGUSR1)
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
    stopping = daemon.wait_for("daemon_stopping", timeout=0)
    stopped = daemon.wait_for("daemon_stopped", timeout=0)
    daemon.wait_for("shutdown_timeout_exceeded", timeout=0)
    # The bound is the contract: SIGKILL at shutdown_timeout, out within KILL_GRACE_S (1 s) of
    # it; the second of slack is for a loaded machine, not for the daemon.
    took_s = (stamp_ns(stopped) - stamp_ns(stopping)) / 1e9
    assert shutdown_timeout - 0.1 <= took_s <= shutdown_timeout + 2.0
    # Coalesced like the signals they are: the twenty USR1 did not become twenty restarts.
    assert len(daemon.find("sidecar_spawned")) <= 3
    assert pid_gone(pid)


def test_second_sigterm_kills_at_once_even_behind_queued_restarts(tmp_path: Path) -> None:
    stubborn = demo_sidecar("stubborn", free_port(), "--ignore-sigterm", stop={"timeout": 60.0})
    config = write_config(tmp_path, [stubborn], shutdown_timeout=60.0)
    with Daemon(config, tmp_path / "state") as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        for _ in range(20):
            daemon.signal(signal.SIGUSR1)
        daemon.signal(signal.SIGTERM)
        daemon.wait_for("daemon_stopping")
        daemon.signal(signal.SIGTERM)
        # Both bounds are a minute: an exit now can only be the second signal's SIGKILL.
        assert daemon.proc.wait(20) == 0
    assert daemon.find("shutdown_forced")
    assert pid_gone(pid)


# -- signals during start-up ----------------------------------------------------------------------


def _blocks_sighup(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigBlk:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


@linux_only
def test_sighup_during_startup_is_handled_not_fatal(tmp_path: Path) -> None:
    """The entry point blocks the daemon's signals before it imports anything heavy; a HUP that
    arrives then (the handshake: the process shows HUP blocked) is a reload, not a death."""
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    with Daemon(config, tmp_path / "state") as daemon:
        wait_until(lambda: _blocks_sighup(daemon.pid), 10.0, "the daemon to block SIGHUP")
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        daemon.wait_for("sidecar_ready")
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0


# -- restart policy ----------------------------------------------------------------------------


def test_on_failure_retries_a_start_that_never_became_ready(tmp_path: Path) -> None:
    """The demo answers 404 on /nope: never ready; stopped at ready.timeout it exits 0 — still
    a failed start, which on-failure restarts."""
    web = demo_sidecar(
        "web",
        free_port(),
        ready={"probe": "http", "path": "/nope", "timeout": 1.0},
        restart={"policy": "on-failure", "max_attempts": 1, "base_delay": 0.05},
    )
    config = write_config(tmp_path, [web])
    with Daemon(config, tmp_path / "state") as daemon:
        failed = daemon.wait_for("sidecar_start_failed")
        assert "ready.timeout" in failed["reason"]
        exited = daemon.wait_for("sidecar_exited")
        assert exited["code"] == 0
        scheduled = daemon.wait_for("restart_scheduled")
        assert scheduled["attempt"] == 1
        daemon.wait_for("restart_budget_exhausted", timeout=20)
        assert daemon.stop() == 0


# -- blocking work off the loop --------------------------------------------------------------------

FD_HOG = textwrap.dedent(
    """
    import os, resource, sys
    count = int(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 64), hard))
    fd = os.open("/dev/null", os.O_RDONLY)
    for _ in range(count):
        os.dup(fd)
    print("ready", flush=True)
    sys.stdin.read()
    """
)


@contextlib.contextmanager
def fd_hogs(total: int) -> Iterator[None]:
    """Processes of ours holding `total` fds between them: every full fd-table scan (the
    preflight's, when a port is held) then reads that many links — a real, slow lookup."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    per = min(hard - 64, 19_500)
    if per < 1000:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low to make a slow lookup")
    hogs = [
        subprocess.Popen(
            [PYTHON, "-c", FD_HOG, str(per)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(math.ceil(total / per))
    ]
    try:
        for hog in hogs:
            assert hog.stdout is not None
            assert hog.stdout.readline().strip() == "ready"
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(10)
            for stream in (hog.stdin, hog.stdout):
                if stream is not None:
                    stream.close()


@linux_only
def test_a_slow_lookup_does_not_delay_another_sidecars_respawn(tmp_path: Path) -> None:
    """Sidecar a's port is held by a stranger; its preflight scans every fd table, which
    ~120 000 fds make take seconds. Meanwhile b, a child that exits at once, keeps being
    respawned: the scan runs in a worker thread, not on the event loop."""
    port = free_port()
    crasher = {
        "name": "b",
        "command": [PYTHON, "-c", "pass"],
        "restart": {"base_delay": 0.01, "max_delay": 0.02, "max_attempts": 100_000},
    }
    config = write_config(tmp_path, [demo_sidecar("a", port), crasher])
    with fd_hogs(120_000), Holder(port), Daemon(config, tmp_path / "state") as daemon:
        found = daemon.wait_for("reconcile_holder_found", sidecar="a", timeout=60)
        spawned_before = [
            e for e in daemon.find("sidecar_spawned", sidecar="b") if stamp_ns(e) < stamp_ns(found)
        ]
        # Had the scan held the loop, b could not have been spawned more than once before it.
        assert len(spawned_before) >= 3, f"b spawned {len(spawned_before)}x during a's lookup"
        assert daemon.stop() == 0


ANY_ADOPTED = textwrap.dedent(
    """
    import subprocess
    from supervisor.system import reaper
    from tests.helpers.nofds import no_fd_left
    said = [reaper.any_adopted()]  # no child at all
    ours = reaper.fork_registered(lambda: subprocess.Popen(["sleep", "30"]), lambda p: p.pid)
    stranger = None
    try:
        said.append(reaper.any_adopted())  # only a fork of ours
        # A child we did not fork through the reaper: what an adopted orphan looks like.
        stranger = subprocess.Popen(["sleep", "30"])
        said.append(reaper.any_adopted())
        with no_fd_left():  # the list cannot be read: the worker thread is asked to look
            said.append(reaper.any_adopted())
    finally:
        for child in (ours, stranger):
            if child is not None:
                child.kill()
                child.wait()
    print(said)
    """
)


@linux_only
def test_a_sigchld_goes_to_the_reaper_thread_only_when_an_orphan_may_be_there() -> None:
    # Run in a fresh interpreter: its only children are the ones the script makes.
    assert run_script(ANY_ADOPTED) == "[False, False, True, True]"
