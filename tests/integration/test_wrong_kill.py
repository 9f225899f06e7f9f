"""Never kill the wrong process: one regression test per wrong-kill and write-outside path.

Real processes, real sockets, real signals, real namespaces; root-only tests skip without root.
Each path, the rule that closes it and the test here are listed in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from supervisor.reconcile import holders, kill
from supervisor.system import groups, net
from tests.integration.test_hostile import (
    Sleeper,
    nothing_written_outside,
    one_error_line,
    run_cli,
)
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    SharedHolder,
    _readline,
    demo_sidecar,
    free_port,
    gone_owner_tag,
    pid_gone,
    render_config,
    wait_until,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces and /proc")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def write_config(tmp_path: Path, sidecars: list[dict[str, object]]) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(render_config(sidecars))
    return path


@pytest.fixture
def bystander() -> Iterator[Sleeper]:
    """A live process of ours (a real `sleep`, its own session) that must never be signalled."""
    proc = Sleeper(["sleep", "600"], new_session=True)
    try:
        yield proc
    finally:
        proc.stop()


# -- 1. duplicate ports; rule 0 --------------------------------------------------------------


def test_duplicate_port_is_a_config_error_with_the_key_path(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, [demo_sidecar("a", port), demo_sidecar("b", port)])
    state = tmp_path / "state"
    for command in (["check-config"], ["run", "--state-dir", str(state)]):
        result = run_cli(*command, "-c", str(config))
        assert result.returncode == 2, result.stderr
        line = one_error_line(result.stderr)
        assert f'sidecar "b": port: {port} is already used by sidecar "a"' in line
    assert not state.exists()


TWO_PORTS = textwrap.dedent(
    """
    import select, socket, sys
    socks = []
    for port in sys.argv[1:3]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", int(port)))
        sock.listen(16)
        socks.append(sock)
    while True:
        for sock in select.select(socks, [], [])[0]:
            sock.accept()[0].close()
    """
)


def test_another_sidecars_current_child_on_our_port_is_live_and_never_killed(
    tmp_path: Path,
) -> None:
    # Sidecar a's child also listens on b's port, and b's marker matches a's command line: the
    # owner tag names this very daemon, so without rule 0 b's preflight would kill it as an
    # orphan ("started by this very daemon earlier") - 22 orphan_killed in 6 s in the incident.
    port_a, port_x = free_port(), free_port()
    marker = f"two-ports-{port_x}"
    a = {
        "name": "a",
        "command": [PYTHON, "-c", TWO_PORTS, str(port_a), str(port_x), marker],
        "port": port_a,
        "stop": {"timeout": 1.0},
    }
    b = demo_sidecar("b", port_x, marker=marker)
    config = write_config(tmp_path, [a])
    with Daemon(config, tmp_path / "state") as daemon:
        child = daemon.wait_for("sidecar_ready", sidecar="a")["pid"]
        created = psutil.Process(child).create_time()
        config.write_text(render_config([a, b]))  # a unchanged: it keeps running
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded")
        found = daemon.wait_for("reconcile_holder_found", sidecar="b")
        assert found["pid"] == child and found["verdict"] == "live"
        assert "'a'" in found["reason"] and "this very daemon" in found["reason"]
        waiting = daemon.wait_for("sidecar_waiting", sidecar="b")
        assert waiting["verdict"] == "live" and waiting["holder_pid"] == child
        assert "sidecar 'a'" in waiting["reason"]
        # Several of b's wait polls later a's child is still the very same process.
        daemon.wait_for("sidecar_wait_polled", sidecar="b", polls=3, timeout=20)
        assert psutil.Process(child).create_time() == created
        status = daemon.dump_status()["status"]
        states = {s["name"]: (s["state"], s["pid"]) for s in status["sidecars"]}
        assert states == {"a": ("ready", child), "b": ("waiting", None)}
        for event in ("orphan_killed", "live_holder_killed", "consent_requested", "kill_aborted"):
            assert not daemon.find(event), event
        assert len(daemon.find("sidecar_spawned", sidecar="a")) == 1
        assert not daemon.find("sidecar_spawned", sidecar="b")
        assert daemon.stop() == 0
    assert pid_gone(child)


# -- 2. group signals under forced pid reuse -------------------------------------------------

PID_REUSE_MODES = ["consent", "child-finish", "child-stop", "target-pidfd", "target-members"]
PID_REUSE_ROUNDS = 40


def run_pid_reuse(mode: str, tmp_path: Path) -> dict[str, object]:
    needs_root()
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    fifo = tmp_path / "announce"
    os.mkfifo(fifo)
    result = subprocess.run(
        [
            "unshare",
            "--kill-child",
            "--pid",
            "--fork",
            "--mount-proc",
            PYTHON,
            "-m",
            "tests.integration.pidreuse",
            mode,
            str(PID_REUSE_ROUNDS),
            str(fifo),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    report: dict[str, object] = json.loads(lines[-1]) if lines else {}
    if result.returncode == 77 or (result.returncode != 0 and "unshare: " in result.stderr):
        pytest.skip(str(report.get("skip") or result.stderr.strip()))
    assert result.returncode == 0, result.stderr[-3000:]
    return report


@linux_only
@pytest.mark.root
@pytest.mark.parametrize("mode", PID_REUSE_MODES)
def test_group_signals_never_reach_a_stranger_that_took_the_pid(mode: str, tmp_path: Path) -> None:
    """consent: the command's group SIGKILLed before it is reaped (it was after: 5 of 10 rounds
    killed a stranger). child-*: our own children likewise. target-*: a holder that is not our
    child, reaped by its parent, its pid retaken by a stranger with a child in its new group."""
    if mode == "target-pidfd" and not groups.pidfd_groups_supported():
        pytest.skip("this kernel lacks PIDFD_SIGNAL_PROCESS_GROUP (Linux >= 6.9)")
    report = run_pid_reuse(mode, tmp_path)
    assert report["errors"] == [], report
    assert report["killed"] == [], report
    # Every round really did hand the pid to a stranger: the test is not vacuous.
    assert report["reused"] == report["rounds"] == PID_REUSE_ROUNDS


MEMBER = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("member", os.getpid(), flush=True)
        while True:
            time.sleep(60)
    while True:
        time.sleep(60)
    """
)


def start_group_with_a_member() -> tuple[subprocess.Popen[bytes], int]:
    leader = subprocess.Popen(
        [PYTHON, "-c", MEMBER], stdout=subprocess.PIPE, start_new_session=True
    )
    assert leader.stdout is not None
    return leader, int(_readline(leader.stdout, 10.0).split()[1])


@linux_only
@pytest.mark.anyio
async def test_member_by_member_group_kill_still_reaches_a_living_leaders_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The other half of the member-by-member fix: while the leader lives, its whole group is
    # still signalled. EINVAL is what a kernel < 6.9 answers to PIDFD_SIGNAL_PROCESS_GROUP.
    real = signal.pidfd_send_signal

    def older_kernel(fd: int, sig: int, siginfo: None = None, flags: int = 0) -> None:
        if flags & groups.PIDFD_SIGNAL_PROCESS_GROUP:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real(fd, sig, siginfo, flags)

    monkeypatch.setattr(signal, "pidfd_send_signal", older_kernel)
    groups.pidfd_groups_supported.cache_clear()
    try:
        assert not groups.pidfd_groups_supported()
        leader, member = start_group_with_a_member()
        assert leader.stdout is not None
        try:
            created = psutil.Process(leader.pid).create_time()
            escalated = await kill.kill_process(
                leader.pid,
                created,
                stop_signal=signal.SIGTERM,
                stop_timeout_s=0.2,
                still_ours=lambda: True,
            )
            assert escalated is True
            assert leader.wait(10) == -signal.SIGKILL
            wait_until(lambda: pid_gone(member), 10.0, "the group member killed")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leader.pid, signal.SIGKILL)
            leader.wait(10)
            leader.stdout.close()
    finally:
        monkeypatch.undo()
        groups.pidfd_groups_supported.cache_clear()


# -- 3. a /proc of another pid namespace -----------------------------------------------------


@linux_only
@pytest.mark.root
def test_daemon_refuses_a_proc_of_another_pid_namespace(tmp_path: Path, bystander: Sleeper) -> None:
    needs_root()
    marker = tmp_path / "spawned"
    sidecar: dict[str, object] = {
        "name": "web",
        "command": [PYTHON, "-c", f"open({str(marker)!r}, 'w')"],
        "ready": {"probe": "none"},
    }
    config = write_config(tmp_path, [sidecar])
    state = tmp_path / "state"
    # A supervisor.pid of a previous run naming a process of the host: the refused daemon must
    # neither sweep after it nor replace it with a host pid of its own.
    state.mkdir(mode=0o700)
    record = {"pid": bystander.pid, "create_time": bystander.create_time, "started_at": "x"}
    (state / "supervisor.pid").write_text(json.dumps(record))
    result = subprocess.run(
        ["unshare", "--kill-child", "--pid", "--fork", PYTHON, "-m", "supervisor", "run",
         "--log-format", "console", "-c", str(config), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip
    if result.returncode != 2 and result.stderr.startswith("unshare: "):
        pytest.skip(f"unshare not permitted here: {result.stderr.strip()}")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "/proc belongs to another pid namespace" in line
    assert "--mount-proc" in line
    assert json.loads((state / "supervisor.pid").read_text()) == record
    assert not marker.exists()
    assert bystander.untouched()


# -- 4. the state dir: owner, mode, no path swap ---------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o720, 0o702])
def test_state_dir_writable_by_group_or_others_is_refused(
    mode: int, tmp_path: Path, bystander: Sleeper
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    record = {"pid": bystander.pid, "create_time": bystander.create_time, "started_at": "x"}
    (state / "supervisor.pid").write_text(json.dumps(record))
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    result = run_cli("run", "-c", str(config), "--state-dir", str(state))
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert f"mode {mode:03o}" in line and f"chmod 700 {state}" in line
    for command in ("stop", "reload", "restart"):
        refused = run_cli(command, "--state-dir", str(state))
        assert refused.returncode == 2, (command, refused.stderr)
        assert f"chmod 700 {state}" in one_error_line(refused.stderr)
    assert sorted(p.name for p in state.iterdir()) == ["supervisor.pid"]
    assert bystander.untouched()


@pytest.mark.root
def test_state_dir_of_another_user_is_refused_and_its_forged_pid_file_not_signalled(
    tmp_path: Path, bystander: Sleeper
) -> None:
    # The incident: a forged supervisor.pid in a dir another user owns made root's
    # `supervisor restart` send SIGUSR1 (default action: terminate) to a root `sleep`.
    needs_root()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    record = {"pid": bystander.pid, "create_time": bystander.create_time, "started_at": "x"}
    (state / "supervisor.pid").write_text(json.dumps(record))
    nobody = 65534
    os.chown(state, nobody, nobody)
    os.chown(state / "supervisor.pid", nobody, nobody)
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    result = run_cli("run", "-c", str(config), "--state-dir", str(state))
    assert result.returncode == 2, result.stderr
    assert f"belongs to uid {nobody}" in one_error_line(result.stderr)
    for command in ("stop", "reload", "restart", "status"):
        refused = run_cli(command, "--state-dir", str(state))
        assert refused.returncode == 2, (command, refused.stderr)
        assert f"belongs to uid {nobody}" in one_error_line(refused.stderr)
    assert sorted(p.name for p in state.iterdir()) == ["supervisor.pid"]
    assert bystander.untouched()


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Atomically swap two names (renameat2 RENAME_EXCHANGE): neither is ever missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


@linux_only
def test_swapping_a_sidecar_dir_for_a_symlink_never_writes_or_unlinks_outside(
    tmp_path: Path,
) -> None:
    # The incident: swapping <state>/<name> for a symlink between a check and a use made the
    # daemon write a temp file into, and unlink a sidecar.pid from, a directory outside.
    port = free_port()
    crashing = demo_sidecar(
        "web",
        port,
        "--crash-after",
        "0.05",
        restart={"base_delay": 0.01, "max_delay": 0.02, "max_attempts": 100000},
    )
    config = write_config(tmp_path, [crashing])
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "web").mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir()
    decoy = {"pid": 1, "note": "must never be unlinked or replaced"}
    (outside / "sidecar.pid").write_text(json.dumps(decoy))
    swap = state / "web.swap"
    swap.symlink_to(outside, target_is_directory=True)
    try:
        exchange(state / "web", swap)
        exchange(state / "web", swap)
    except OSError as exc:
        pytest.skip(f"renameat2(RENAME_EXCHANGE) not available: {exc}")
    stop = threading.Event()
    swaps = [0]

    def swapper() -> None:
        while not stop.is_set():
            exchange(state / "web", swap)
            swaps[0] += 1

    with nothing_written_outside(tmp_path, state), Daemon(config, state) as daemon:
        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        try:
            daemon.wait_for("sidecar_ready", sidecar="web", count=30, timeout=60)
            daemon.wait_for("sidecar_exited", sidecar="web", count=30, timeout=60)
        finally:
            stop.set()
            thread.join(10)
        if (state / "web").is_symlink():
            exchange(state / "web", swap)
        written = len(daemon.find("pidfile_written"))
        refused = len(daemon.find("pidfile_write_failed"))
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0
    assert swaps[0] > 100
    assert written > 0 and written + refused >= 30
    assert json.loads((outside / "sidecar.pid").read_text()) == decoy
    assert sorted(p.name for p in outside.iterdir()) == ["sidecar.pid"]


# -- 5. a forged supervisor.pid --------------------------------------------------------------


def test_forged_supervisor_pid_naming_a_process_that_is_not_a_supervisor_is_not_signalled(
    tmp_path: Path, bystander: Sleeper
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    record = {"pid": bystander.pid, "create_time": bystander.create_time, "started_at": "x"}
    (state / "supervisor.pid").write_text(json.dumps(record))
    for command in (["stop"], ["stop", "--wait", "1"], ["reload"], ["restart"], ["status"]):
        result = run_cli(*command, "--state-dir", str(state))
        assert result.returncode == 3, (command, result.stderr)
        assert "no supervisor is running" in one_error_line(result.stderr)
    assert bystander.untouched()


def test_supervisor_pid_with_a_create_time_that_does_not_match_is_not_signalled(
    tmp_path: Path,
) -> None:
    # A real `supervisor run` of ours, named with the wrong create time (a recycled pid looks
    # like this): it must get no SIGTERM, SIGHUP or SIGUSR1.
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready", sidecar="web")
        created = psutil.Process(daemon.pid).create_time()
        forged = tmp_path / "forged"
        forged.mkdir(mode=0o700)
        record = {"pid": daemon.pid, "create_time": created - 5.0, "started_at": "x"}
        (forged / "supervisor.pid").write_text(json.dumps(record))
        for command in ("stop", "reload", "restart"):
            result = run_cli(command, "--state-dir", str(forged))
            assert result.returncode == 3, (command, result.stderr)
            one_error_line(result.stderr)
        daemon.dump_status()  # handshake: every signal sent before this one has been handled
        for event in ("daemon_stopping", "config_reloaded", "config_invalid", "sidecar_stopping"):
            assert not daemon.find(event), event
        assert len(daemon.find("sidecar_spawned")) == 1
        # The true record is accepted (the control for the forged one).
        assert run_cli("reload", "--state-dir", str(tmp_path / "state")).returncode == 0
        daemon.wait_for("config_reloaded")
        assert daemon.stop() == 0


# -- 6. a listening socket shared by several processes ---------------------------------------


def tagged_env(name: str) -> dict[str, str]:
    return {"SUPERVISOR_SIDECAR": name, "SUPERVISOR_OWNER": gone_owner_tag()}


def test_find_holders_reports_every_process_sharing_a_socket() -> None:
    port = free_port()
    with SharedHolder(port, env=tagged_env("web")) as shared:
        found = {h.pid: h for h in holders.find_holders(port)}
        assert set(found) == {shared.pid, shared.coholder_pid}
        for holder in found.values():
            assert holder.addresses == (f"127.0.0.1:{port}",)
            assert holder.facts is not None
        leader_env = found[shared.pid].facts.environ  # type: ignore[union-attr]
        assert leader_env is not None and leader_env.get("SUPERVISOR_SIDECAR") == "web"


RECEIVER = textwrap.dedent(
    """
    import os, socket, sys, time
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sys.argv[1])
    server.listen(1)
    print("ready", os.getpid(), flush=True)
    conn, _ = server.accept()
    _, fds, _, _ = socket.recv_fds(conn, 16, 1)
    conn.close()
    server.close()
    print("got", fds[0], flush=True)
    while True:
        time.sleep(60)
    """
)

SENDER = textwrap.dedent(
    """
    import os, socket, sys, time
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[2])))
    sock.listen(16)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.connect(sys.argv[1])
    socket.send_fds(peer, [b"x"], [sock.fileno()])
    peer.close()
    print("sent", os.getpid(), flush=True)
    while True:
        time.sleep(60)
    """
)


@contextlib.contextmanager
def passed_listener(tmp_path: Path, port: int, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """A tagged process listens on `port` and hands the socket (SCM_RIGHTS) to an unrelated,
    untagged process; yields (sender pid, receiver pid)."""
    path = str(tmp_path / "pass.sock")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    receiver = subprocess.Popen(
        [PYTHON, "-c", RECEIVER, path],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=clean,
        start_new_session=True,
    )
    sender: subprocess.Popen[bytes] | None = None
    try:
        assert receiver.stdout is not None
        assert _readline(receiver.stdout, 10.0).startswith(b"ready")
        sender = subprocess.Popen(
            [PYTHON, "-c", SENDER, path, str(port)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**clean, **env},
            start_new_session=True,
        )
        assert sender.stdout is not None
        assert _readline(sender.stdout, 10.0).startswith(b"sent")
        assert _readline(receiver.stdout, 10.0).startswith(b"got")
        yield sender.pid, receiver.pid
    finally:
        for proc in (sender, receiver):
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)
                if proc.stdout:
                    proc.stdout.close()


def alive_as(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def assert_nobody_killed_and_waiting(daemon: Daemon, port: int, tagged: int, foreign: int) -> None:
    created = {pid: psutil.Process(pid).create_time() for pid in (tagged, foreign)}
    waiting = daemon.wait_for("sidecar_waiting", sidecar="web")
    assert waiting["verdict"] == "foreign" and waiting["holder_pid"] == foreign
    verdicts = {e["pid"]: e["verdict"] for e in daemon.find("reconcile_holder_found")}
    assert verdicts == {tagged: "orphan", foreign: "foreign"}
    daemon.wait_for("sidecar_wait_polled", sidecar="web", polls=2, timeout=20)
    for pid, when in created.items():
        assert alive_as(pid, when), f"pid {pid} was signalled"
    for event in ("orphan_killed", "live_holder_killed", "sidecar_spawned", "consent_requested"):
        assert not daemon.find(event), event
    assert not daemon.find("reconcile_port_free")
    assert net.find_listeners(port)


def test_fork_shared_listener_with_a_foreign_coholder_kills_nobody(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, [demo_sidecar("web", port)])
    shared = SharedHolder(port, env=tagged_env("web"))
    with shared, Daemon(config, tmp_path / "state") as daemon:
        assert_nobody_killed_and_waiting(daemon, port, shared.pid, shared.coholder_pid)
        # The foreign co-holder goes: the tagged orphan alone holds the port now. It is
        # reclaimed, and port_released is true because the port really is free then.
        shared.stop_coholder()
        killed = daemon.wait_for("orphan_killed", sidecar="web")
        assert killed["pid"] == shared.pid and killed["port_released"] is True
        daemon.wait_for("sidecar_ready", sidecar="web")
        assert daemon.stop() == 0


def test_scm_rights_shared_listener_with_a_foreign_coholder_kills_nobody(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, [demo_sidecar("web", port)])
    with passed_listener(tmp_path, port, tagged_env("web")) as (sender, receiver):
        found = {h.pid for h in holders.find_holders(port)}
        assert found == {sender, receiver}
        with Daemon(config, tmp_path / "state") as daemon:
            assert_nobody_killed_and_waiting(daemon, port, sender, receiver)
            assert daemon.stop() == 0


def test_port_released_is_not_claimed_while_a_coholder_keeps_the_port(tmp_path: Path) -> None:
    # Both co-holders are ours (tagged, orphans): both are reclaimed, and the one kill that
    # leaves the other still listening never logs port_released: true.
    port = free_port()
    config = write_config(tmp_path, [demo_sidecar("web", port)])
    env = tagged_env("web")
    shared = SharedHolder(port, env=env, coholder_env=env, coholder_own_session=True)
    with shared, Daemon(config, tmp_path / "state") as daemon:
        ready = daemon.wait_for("sidecar_ready", sidecar="web", timeout=30)
        kills = daemon.find("orphan_killed", sidecar="web")
        assert {k["pid"] for k in kills} == {shared.pid, shared.coholder_pid}
        # Whatever order: the last kill freed the port; any earlier one did not.
        assert kills[-1]["port_released"] is True
        assert all(k["port_released"] is False for k in kills[:-1])
        assert ready["pid"] not in (shared.pid, shared.coholder_pid)
        assert daemon.stop() == 0


def test_a_plain_holder_is_still_reclaimed(tmp_path: Path) -> None:
    # The control for the shared-socket tests: one tagged orphan alone is killed as before.
    port = free_port()
    config = write_config(tmp_path, [demo_sidecar("web", port)])
    with Holder(port, env=tagged_env("web")) as orphan:
        with Daemon(config, tmp_path / "state") as daemon:
            killed = daemon.wait_for("orphan_killed", sidecar="web")
            assert killed["pid"] == orphan.pid and killed["port_released"] is True
            daemon.wait_for("sidecar_ready", sidecar="web")
            assert daemon.stop() == 0
        assert not orphan.alive()


def test_socket_passing_helpers_really_share_the_inode(tmp_path: Path) -> None:
    port = free_port()
    with passed_listener(tmp_path, port, {}) as (sender, receiver):
        (listener,) = net.find_listeners(port)
        links = set()
        for pid in (sender, receiver):
            for fd in os.listdir(f"/proc/{pid}/fd") if sys.platform == "linux" else []:
                with contextlib.suppress(OSError):
                    links.add((pid, os.readlink(f"/proc/{pid}/fd/{fd}")))
        if sys.platform == "linux":
            inode = f"socket:[{listener.inode}]"
            assert {pid for pid, link in links if link == inode} == {sender, receiver}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # both gone: the port is free again
