"""Only sound evidence of "ours" (issue 24, without cgroups): real processes, real daemons.

- the stale-session stranger: a same-uid double-forked daemon whose session id is the number a
  dead sidecar of ours once had is never killed, by the start-up sweep or the preflight;
- spawn records of another boot prove nothing: dropped when read, and pruned;
- a clean stop leaves no spawn record behind (a record outliving its process could only ever
  match a stranger);
- a copy of the sidecar's command started by hand and detached matches the marker only: never
  killed silently (waited on unattended; asked, with that reason, from a terminal).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.evidence.ledger import LEDGER_DIR, Ledger, Spawn
from supervisor.system.statedir import StateDir
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    free_port,
    pid_gone,
    port_free,
    render_config,
    session_leader,
    wait_until,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces and /proc")
STALE_SESSION_ROUNDS = 20


# -- the stale-session stranger ---------------------------------------------------------------


@linux_only
@pytest.mark.root
@pytest.mark.parametrize("isolation", ["none", "cgroup"])
def test_a_stranger_in_a_dead_sidecars_session_number_is_never_killed(
    tmp_path: Path, isolation: str
) -> None:
    """Before: `ledger.session_member` accepted any process whose session id equalled a dead
    spawn's, and the sweep and the preflight killed it (10/10 after a simulated reboot). Each
    round hands the number to a stranger (a pid namespace with pid_max 304); the harness checks
    the stranger's session really has our number, and that neither path signals it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a pid namespace)")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    state = tmp_path / "state"
    result = subprocess.run(
        [
            "unshare",
            "--kill-child",
            "--pid",
            "--fork",
            "--mount-proc",
            PYTHON,
            "-m",
            "tests.integration.stalesession",
            str(STALE_SESSION_ROUNDS),
            str(state),
            isolation,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines else {}
    if result.returncode == 77 or (result.returncode != 0 and "unshare: " in result.stderr):
        pytest.skip(str(report.get("skip") or result.stderr.strip()))
    assert result.returncode == 0, result.stderr[-3000:]
    assert report["errors"] == [], report
    assert report["killed"] == [], report
    # Every round the stranger's session carried our dead sidecar's number: not vacuous.
    assert report["reused"] == report["rounds"] == STALE_SESSION_ROUNDS
    assert report["isolation"] == isolation


# -- boots ------------------------------------------------------------------------------------


def spawn_of(pid: int, boot_id: str) -> Spawn:
    return Spawn(
        pid=pid,
        create_time=psutil.Process(pid).create_time(),
        boot_id=boot_id,
        sid=os.getsid(pid),
        pgid=os.getpgid(pid),
        command=("x",),
        sidecar="web",
        daemon_pid=1,
        daemon_create_time=0.0,
        spawned_at="",
    )


@linux_only
def test_spawn_records_of_another_boot_are_dropped_and_pruned(tmp_path: Path) -> None:
    """After a reboot every pid is new: a record of the last boot naming pid P proves nothing
    about today's P, even with a matching create time (clocks move)."""
    # Two children of this test, each leading its own session as the daemon's sidecars do.
    with (
        session_leader() as old,
        session_leader() as new,
        StateDir.open(tmp_path / "state", create=True) as state,
    ):
        book = Ledger(state)
        book.record(spawn_of(old, "another-boot"))
        ours = spawn_of(new, book.boot_id)
        book.record(ours)
        reader = Ledger(state, prune=False)  # `supervisor port`: reads, never prunes
        assert reader.entries() == [ours]
        assert len(list((tmp_path / "state" / LEDGER_DIR).glob("*.json"))) == 2
        assert book.entries() == [ours]
        assert [p.name for p in (tmp_path / "state" / LEDGER_DIR).glob("*.json")] == [
            ours.file_name
        ]


# -- a clean stop -----------------------------------------------------------------------------

PGID_MEMBER = textwrap.dedent(
    """
    import os, signal, time
    member = os.fork()
    if member == 0:
        os.setpgid(0, 0)  # its own group, still in the sidecar's session: survives the group stop
        os.write(1, b"member %d\\n" % os.getpid())
        time.sleep(3600)
        os._exit(0)
    time.sleep(3600)
    """
)


@linux_only
def test_a_clean_stop_leaves_no_spawn_record_and_no_member(tmp_path: Path) -> None:
    """Before: a setpgid member survived the group stop, and the record stayed while it lived
    (5/5 strangers killed after a clean stop once the number came round). Now the child's tree
    is snapshotted when the stop begins and what outlives the group stop is stopped; the record
    goes with its process."""
    state = tmp_path / "state"
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [{"name": "app", "command": [PYTHON, "-c", PGID_MEMBER]}], {"isolation": "none"}
        )
    )  # the evidence without cgroups (with them, test_cgroups)
    member = 0
    try:
        with Daemon(config, state) as daemon:
            line = daemon.wait_for(
                "child_output", where=lambda e: str(e.get("line", "")).startswith("member")
            )
            member = int(str(line["line"]).split()[1])
            assert list((state / LEDGER_DIR).glob("*.json"))
            assert daemon.stop() == 0
            stopped = daemon.find("sidecar_leftovers_stopped")
            assert [e["pids"] for e in stopped] == [[member]]
        assert pid_gone(member)
        assert list((state / LEDGER_DIR).glob("*.json")) == []
    finally:
        if member:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)


DOUBLE_FORK = textwrap.dedent(
    """
    import os, time
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os.setsid()
            os.write(1, b"grandchild %d\\n" % os.getpid())
            time.sleep(3600)
            os._exit(0)
        os._exit(0)  # the grandchild is orphaned now: adopted by the daemon (its subreaper)
    os.waitpid(middle, 0)
    time.sleep(3600)
    """
)


@linux_only
def test_an_adopted_grandchild_is_stopped_with_the_daemon(tmp_path: Path) -> None:
    """A double fork while the child runs: the grandchild's chain to our child is broken, but
    the daemon adopted it (subreaper), which proves it ours. Before, a clean stop left it."""
    state = tmp_path / "state"
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [{"name": "app", "command": [PYTHON, "-c", DOUBLE_FORK]}], {"isolation": "none"}
        )
    )  # the evidence without cgroups (with them, test_cgroups)
    grandchild = 0
    try:
        with Daemon(config, state) as daemon:
            line = daemon.wait_for(
                "child_output", where=lambda e: str(e.get("line", "")).startswith("grandchild")
            )
            grandchild = int(str(line["line"]).split()[1])
            wait_until(lambda: psutil.Process(grandchild).ppid() == daemon.pid, 10.0, "adoption")
            assert daemon.stop() == 0
            assert [e["pids"] for e in daemon.find("adopted_stopped")] == [[grandchild]]
        assert pid_gone(grandchild)
    finally:
        if grandchild:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)


# -- the hand-started copy --------------------------------------------------------------------


def http_server(port: int) -> list[str]:
    return [PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


@contextlib.contextmanager
def hand_started_copy(port: int, tmp_path: Path) -> Iterator[psutil.Process]:
    """`setsid python3 -m http.server P &` from a shell that then exits: detached, no tags."""
    if shutil.which("setsid") is None:
        pytest.skip("setsid (util-linux) is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    command = " ".join(http_server(port))
    shell = subprocess.run(
        ["sh", "-c", f"setsid {command} >/dev/null 2>&1 </dev/null & echo $!"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=30,
        check=True,
    )
    copy = psutil.Process(int(shell.stdout.split()[0]))
    try:
        wait_until(lambda: not port_free(port), 15.0, "the hand-started copy to listen")
        yield copy
    finally:
        with contextlib.suppress(psutil.Error):
            copy.kill()
        psutil.wait_procs([copy], timeout=5)


def config_with(tmp_path: Path, port: int, **reclaim: object) -> Path:
    config = tmp_path / "supervisor.toml"
    sidecar: dict[str, object] = {"name": "web", "command": http_server(port), "port": port}
    if reclaim:
        sidecar["reclaim"] = reclaim
    config.write_text(render_config([sidecar]))  # the default marker: the whole command line
    return config


def untouched(copy: psutil.Process) -> bool:
    return copy.is_running() and copy.status() != psutil.STATUS_ZOMBIE


@linux_only
def test_a_hand_started_copy_is_waited_on_unattended(tmp_path: Path) -> None:
    """Before: `orphan` ("no owner tag, and its parent is gone") and killed without a word."""
    port = free_port()
    proof = tmp_path / "consent-ran"
    # consent = "auto" with a command: the command is never asked about a marker-only holder.
    config = config_with(
        tmp_path, port, consent_command=["sh", "-c", f"echo ran > {proof}; exit 0"]
    )
    with hand_started_copy(port, tmp_path) as copy:
        with Daemon(config, tmp_path / "state") as daemon:
            found = daemon.wait_for("reconcile_holder_found")
            assert found["pid"] == copy.pid and found["verdict"] == "unproven"
            assert "matches the marker only" in found["reason"]
            waiting = daemon.wait_for("sidecar_waiting")
            assert waiting["verdict"] == "unproven" and waiting["holder_pid"] == copy.pid
            declined = daemon.wait_for("consent_declined", pid=copy.pid)
            assert "matches the marker only" in declined["detail"]
            assert not daemon.find("orphan_killed") and not daemon.find("live_holder_killed")
            assert daemon.stop() == 0
        with Daemon(config, tmp_path / "again", "--non-interactive") as daemon:
            assert daemon.wait_for("sidecar_waiting")["verdict"] == "unproven"
            assert not daemon.find("consent_requested")
            assert daemon.stop() == 0
        assert untouched(copy)
        assert not proof.exists()


def read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} on the terminal; got {seen!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            seen += os.read(fd, 4096)
    return seen


@linux_only
def test_a_hand_started_copy_is_asked_about_at_an_interactive_launch(tmp_path: Path) -> None:
    port = free_port()
    config = config_with(tmp_path, port)
    master, slave = pty.openpty()
    try:
        with (
            hand_started_copy(port, tmp_path) as copy,
            Daemon(config, tmp_path / "state", stdin=slave) as daemon,
        ):
            prompt = read_until(master, b"[y/N]", 30).decode(errors="replace")
            assert "matches the marker only" in prompt and f"pid {copy.pid}" in prompt
            requested = daemon.wait_for("consent_requested", pid=copy.pid)
            assert requested["verdict"] == "unproven"
            os.write(master, b"n\n")
            daemon.wait_for("consent_declined", pid=copy.pid)
            assert daemon.wait_for("sidecar_waiting")["verdict"] == "unproven"
            assert untouched(copy)
            assert daemon.stop() == 0
    finally:
        os.close(master)
        os.close(slave)
