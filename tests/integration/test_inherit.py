"""`socket.inherit`: the daemon holds the listening socket across crashes, backoff and reloads.

Black-box: a real daemon, the demo sidecar (or small real servers), real clients on free ports.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support import (
    PYTHON,
    Daemon,
    demo_sidecar,
    free_port,
    pid_gone,
    read_json,
    render_config,
)

PROC_FD = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/fd")
HTTP_READY = {"probe": "http", "path": "/health"}
INHERIT = {"inherit": True}


def write_config(tmp_path: Path, sidecars: list[dict[str, object]]) -> Path:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars))
    return config


def start(tmp_path: Path, sidecars: list[dict[str, object]]) -> Daemon:
    return Daemon(write_config(tmp_path, sidecars), tmp_path / "state")


def listener_pids(port: int, pids: list[int]) -> set[int]:
    """Which of `pids` hold a TCP LISTEN socket on `port` (asking each process)."""
    held = set()
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                held.add(pid)
    return held


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def fd3_inode(pid: int) -> int:
    link = os.readlink(f"/proc/{pid}/fd/3")
    assert link.startswith("socket:["), link
    return int(link[8:-1])


def health(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> int:
    url = f"http://{host}:{port}/health" if ":" not in host else f"http://[{host}]:{port}/health"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        status: int = response.status
        return status


def bind_error(host: str, port: int) -> int | None:
    """Try to take the port as another program would (SO_REUSEADDR, listen); the errno or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            return exc.errno
    return None


class Clients(threading.Thread):
    """A client that connects every `interval_s` and records each outcome with its instant."""

    def __init__(self, port: int, interval_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval_s = interval_s
        self.outcomes: list[tuple[int, str]] = []  # (time.monotonic_ns(), "ok" | errno name)
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with socket.socket() as sock:
                sock.settimeout(10.0)
                try:
                    sock.connect(("127.0.0.1", self.port))
                    outcome = "ok"
                except OSError as exc:
                    outcome = errno.errorcode.get(exc.errno or 0, str(exc))
            with self.lock:
                self.outcomes.append((time.monotonic_ns(), outcome))
            if outcome == "ok":
                self.connected.set()
            self.done.wait(self.interval_s)  # the cadence, not a synchronisation

    def between(self, start_ns: int, end_ns: int) -> list[str]:
        with self.lock:
            return [o for t, o in self.outcomes if start_ns <= t <= end_ns]

    def all(self) -> list[str]:
        with self.lock:
            return [o for _, o in self.outcomes]

    def stop(self) -> None:
        self.done.set()
        self.join(20)


@pytest.fixture
def clients() -> Iterator[list[Clients]]:
    started: list[Clients] = []
    yield started
    for client in started:
        client.stop()


def crash_and_recover(daemon: Daemon, port: int, client: Clients) -> tuple[int, int, int]:
    """SIGKILL the ready child while `client` connects; return (killed_ns, answered_ns,
    new pid) once the new child answered GET /health with 200."""
    first = daemon.wait_for("sidecar_ready")["pid"]
    client.start()
    assert client.connected.wait(15), "the client never connected"
    killed_ns = time.monotonic_ns()
    os.kill(first, signal.SIGKILL)
    second = daemon.wait_for("sidecar_ready", count=2)["pid"]
    assert second != first
    assert health(port) == 200
    answered_ns = time.monotonic_ns()
    return killed_ns, answered_ns, second


@PROC_FD
def test_the_daemon_itself_is_among_the_listeners_and_hands_the_socket_as_fd_3(
    tmp_path: Path,
) -> None:
    port = free_port()
    sidecar = demo_sidecar("web", port, ready=HTTP_READY, socket=INHERIT)
    with start(tmp_path, [sidecar]) as daemon:
        bound = daemon.wait_for("socket_bound")
        assert bound["address"] == f"127.0.0.1:{port}"
        child = daemon.wait_for("sidecar_ready")["pid"]
        assert listener_pids(port, [daemon.pid, child]) == {daemon.pid, child}
        assert fd3_inode(child) == bound["inode"]
        assert bound["inode"] in socket_inodes(daemon.pid)
        environ = psutil.Process(child).environ()
        assert environ["LISTEN_FDS"] == "1"
        assert environ["LISTEN_PID"] == str(child)
        assert environ["LISTEN_FDNAMES"] == "web"
        assert health(port) == 200
        assert daemon.stop() == 0
    assert daemon.find("socket_closed", address=f"127.0.0.1:{port}")
    assert bind_error("127.0.0.1", port) is None


def test_no_connection_is_refused_across_a_sigkill_and_respawn(
    tmp_path: Path, clients: list[Clients]
) -> None:
    port = free_port()
    sidecar = demo_sidecar("web", port, ready=HTTP_READY, socket=INHERIT)
    client = Clients(port)
    clients.append(client)
    with start(tmp_path, [sidecar]) as daemon:
        killed_ns, answered_ns, _ = crash_and_recover(daemon, port, client)
        client.stop()
        during = client.between(killed_ns, answered_ns)
        assert during, "no connection attempt fell between the crash and the answer"
        assert set(client.all()) == {"ok"}, sorted(set(client.all()))
        assert len(daemon.find("socket_bound")) == 1
        assert daemon.stop() == 0


def test_without_inherit_the_same_client_is_refused_during_the_restart(
    tmp_path: Path, clients: list[Clients]
) -> None:
    # The contrast that shows the client above can see a refusal at all.
    port = free_port()
    sidecar = demo_sidecar(
        "web", port, ready=HTTP_READY, restart={"base_delay": 0.3, "max_delay": 0.3}
    )
    client = Clients(port)
    clients.append(client)
    with start(tmp_path, [sidecar]) as daemon:
        killed_ns, answered_ns, _ = crash_and_recover(daemon, port, client)
        client.stop()
        assert "ECONNREFUSED" in client.between(killed_ns, answered_ns)
        assert daemon.stop() == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_no_other_process_can_take_the_port_during_a_long_backoff(
    host: str, tmp_path: Path
) -> None:
    port = free_port()
    sidecar = demo_sidecar(
        "web", port, host=host, socket=INHERIT, restart={"base_delay": 30.0, "max_delay": 30.0}
    )
    with start(tmp_path, [sidecar]) as daemon:
        child = daemon.wait_for("sidecar_ready")["pid"]
        os.kill(child, signal.SIGKILL)
        scheduled = daemon.wait_for("restart_scheduled")
        assert scheduled["delay_s"] == 30.0
        assert pid_gone(child)
        for address in ("127.0.0.1", "0.0.0.0"):
            assert bind_error(address, port) == errno.EADDRINUSE, address
        # A client connecting meanwhile is queued, not refused.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        daemon.dump_status()
        (entry,) = read_json(tmp_path / "state" / "status.json")["sidecars"]
        assert entry["state"] == "backoff"
        assert daemon.stop() == 0
    assert bind_error(host, port) is None


def test_a_reload_that_changes_the_port_rebinds(tmp_path: Path) -> None:
    old_port, new_port = free_port(), free_port()
    while new_port == old_port:
        new_port = free_port()
    config = write_config(
        tmp_path, [demo_sidecar("web", old_port, ready=HTTP_READY, socket=INHERIT)]
    )
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready")
        config.write_text(
            render_config([demo_sidecar("web", new_port, ready=HTTP_READY, socket=INHERIT)])
        )
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded", changed=["web"])
        closed = daemon.wait_for("socket_closed")
        assert closed["address"] == f"127.0.0.1:{old_port}"
        bound = daemon.wait_for("socket_bound", count=2)
        assert bound["address"] == f"127.0.0.1:{new_port}"
        child = daemon.wait_for("sidecar_ready", count=2)["pid"]
        assert listener_pids(new_port, [daemon.pid, child]) == {daemon.pid, child}
        assert bind_error("127.0.0.1", old_port) is None
        assert health(new_port) == 200
        assert daemon.stop() == 0


@PROC_FD
def test_a_reload_that_keeps_the_address_keeps_the_socket_and_refuses_nobody(
    tmp_path: Path, clients: list[Clients]
) -> None:
    port = free_port()
    entry = demo_sidecar("web", port, ready=HTTP_READY, socket=INHERIT)
    config = write_config(tmp_path, [entry])
    client = Clients(port)
    clients.append(client)
    with Daemon(config, tmp_path / "state") as daemon:
        first = daemon.wait_for("sidecar_ready")["pid"]
        inode = daemon.wait_for("socket_bound")["inode"]
        client.start()
        assert client.connected.wait(15)
        config.write_text(render_config([{**entry, "env": {"CHANGED": "1"}}]))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded", changed=["web"])
        second = daemon.wait_for("sidecar_ready", count=2)["pid"]
        assert second != first
        assert health(port) == 200
        client.stop()
        assert set(client.all()) == {"ok"}
        assert len(daemon.find("socket_bound")) == 1
        assert not daemon.find("socket_closed")
        assert fd3_inode(second) == inode
        assert daemon.stop() == 0


@PROC_FD
def test_sigusr1_restarts_the_child_on_the_same_socket(
    tmp_path: Path, clients: list[Clients]
) -> None:
    port = free_port()
    client = Clients(port)
    clients.append(client)
    with start(tmp_path, [demo_sidecar("web", port, ready=HTTP_READY, socket=INHERIT)]) as daemon:
        first = daemon.wait_for("sidecar_ready")["pid"]
        inode = daemon.wait_for("socket_bound")["inode"]
        client.start()
        assert client.connected.wait(15)
        daemon.signal(signal.SIGUSR1)
        second = daemon.wait_for("sidecar_ready", count=2)["pid"]
        assert second != first and fd3_inode(second) == inode
        assert health(port) == 200
        client.stop()
        assert set(client.all()) == {"ok"}
        assert len(daemon.find("socket_bound")) == 1
        assert daemon.stop() == 0


def test_a_reload_that_turns_inherit_off_hands_the_port_back_to_the_child(
    tmp_path: Path,
) -> None:
    port = free_port()
    entry = demo_sidecar("web", port, ready=HTTP_READY, socket=INHERIT)
    config = write_config(tmp_path, [entry])
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready")
        config.write_text(render_config([{**entry, "socket": {"inherit": False}}]))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded", changed=["web"])
        daemon.wait_for("socket_closed")
        child = daemon.wait_for("sidecar_ready", count=2)["pid"]
        # The child bound the port itself this time; the daemon holds nothing.
        assert listener_pids(port, [daemon.pid, child]) == {child}
        assert health(port) == 200
        assert daemon.stop() == 0


def test_removing_the_sidecar_closes_its_socket(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    keep = demo_sidecar("keep", other)
    config = write_config(tmp_path, [demo_sidecar("web", port, socket=INHERIT), keep])
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready", sidecar="web")
        daemon.wait_for("sidecar_ready", sidecar="keep")
        config.write_text(render_config([keep]))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("config_reloaded", removed=["web"])
        assert daemon.find("socket_closed", sidecar="web", address=f"127.0.0.1:{port}")
        assert bind_error("127.0.0.1", port) is None
        assert port not in {
            c.laddr.port
            for c in psutil.Process(daemon.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr
        }
        assert daemon.stop() == 0


@pytest.mark.parametrize("isolation", ["none", "cgroup"])
def test_after_a_daemon_sigkill_the_child_holding_the_socket_is_reclaimed_as_an_orphan(
    tmp_path: Path, isolation: str
) -> None:
    """Without a cgroup the preflight finds it and calls it an orphan; with one (root only),
    the next daemon empties the dead daemon's cgroup before the first launch."""
    if isolation == "cgroup" and os.geteuid() != 0:
        pytest.skip("a cgroup per sidecar needs root here")
    port = free_port()
    sidecars = [demo_sidecar("web", port, ready=HTTP_READY, socket=INHERIT)]
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars, {"isolation": isolation}))
    first = Daemon(config, tmp_path / "state")
    try:
        orphan = first.wait_for("sidecar_ready")["pid"]
    finally:
        first.kill()
    # The orphan alone holds the socket the dead daemon bound, and still serves on it.
    assert listener_pids(port, [orphan]) == {orphan}
    assert health(port) == 200
    with Daemon(config, tmp_path / "state") as second:
        if isolation == "none":
            found = second.wait_for("reconcile_holder_found")
            assert found["pid"] == orphan and found["verdict"] == "orphan", found
            second.wait_for("orphan_killed", pid=orphan)
        else:
            assert second.wait_for("cgroup_leftovers_killed", sidecar="web")["count"] == 1
        second.wait_for("socket_bound")
        child = second.wait_for("sidecar_ready")["pid"]
        assert child != orphan and pid_gone(orphan)
        assert listener_pids(port, [second.pid, child]) == {second.pid, child}
        assert second.stop() == 0


def test_the_daemon_never_reclaims_its_own_socket(tmp_path: Path) -> None:
    # Every restart runs the preflight while the daemon holds the port: it must see it free.
    port = free_port()
    with start(tmp_path, [demo_sidecar("web", port, socket=INHERIT)]) as daemon:
        first = daemon.wait_for("sidecar_ready")["pid"]
        os.kill(first, signal.SIGKILL)
        free = daemon.wait_for("reconcile_port_free", count=2)
        assert free["inherited"] is True
        daemon.wait_for("sidecar_ready", count=2)
        assert not daemon.find("reconcile_holder_found")
        assert not daemon.find("sidecar_waiting")
        assert daemon.stop() == 0


NEVER_ACCEPTS = textwrap.dedent(
    """
    import signal
    print("holding fd 3, never accepting", flush=True)
    signal.pause()
    """
)

ACCEPTS_AND_CLOSES = textwrap.dedent(
    """
    import socket
    server = socket.socket(fileno=3)
    server.setblocking(True)
    while True:
        conn, _ = server.accept()
        conn.close()
    """
)


@pytest.mark.parametrize("probe", ["tcp", "http"])
def test_a_child_that_never_accepts_is_not_ready(probe: str, tmp_path: Path) -> None:
    port = free_port()
    sidecar = {
        "name": "mute",
        "command": [PYTHON, "-c", NEVER_ACCEPTS],
        "port": port,
        "ready": {"probe": probe, "path": "/health", "timeout": 1.0},
        "restart": {"policy": "never"},
        "socket": INHERIT,
    }
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("child_output", line="holding fd 3, never accepting")
        failed = daemon.wait_for("sidecar_start_failed")
        assert failed["reason"] == "not ready within 1s (ready.timeout)"
        assert not daemon.find("sidecar_ready")
        assert daemon.stop() == 0


def test_tcp_probe_counts_a_server_that_accepts_and_closes_at_once(tmp_path: Path) -> None:
    port = free_port()
    sidecar = {
        "name": "closer",
        "command": [PYTHON, "-c", ACCEPTS_AND_CLOSES],
        "port": port,
        "ready": {"probe": "tcp", "timeout": 30.0},
        "socket": INHERIT,
    }
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("sidecar_ready")
        assert daemon.stop() == 0


@pytest.mark.parametrize("host", ["::1", "::"])
def test_ipv6_hosts_are_bound_too(host: str, tmp_path: Path) -> None:
    port = free_port(ipv6=True)
    sidecar = demo_sidecar("web", port, host=host, ready=HTTP_READY, socket=INHERIT)
    with start(tmp_path, [sidecar]) as daemon:
        bound = daemon.wait_for("socket_bound")
        assert bound["address"] == f"[{host}]:{port}"
        child = daemon.wait_for("sidecar_ready")["pid"]
        assert listener_pids(port, [daemon.pid, child]) == {daemon.pid, child}
        assert health(port, "::1") == 200
        if host == "::":  # the unspecified address serves IPv4 clients too
            assert health(port, "127.0.0.1") == 200
        assert daemon.stop() == 0


def test_a_taken_port_without_reclaim_waits_then_binds(tmp_path: Path) -> None:
    port = free_port()
    sidecar = demo_sidecar("web", port, socket=INHERIT, reclaim={"enabled": False})
    taken = socket.socket()
    taken.bind(("127.0.0.1", port))
    taken.listen(1)
    try:
        with start(tmp_path, [sidecar]) as daemon:
            failed = daemon.wait_for("socket_bind_failed")
            assert failed["address"] == f"127.0.0.1:{port}"
            daemon.wait_for("sidecar_waiting")
            taken.close()
            daemon.wait_for("socket_bound")
            daemon.wait_for("sidecar_ready")
            assert daemon.stop() == 0
    finally:
        taken.close()


def test_an_address_that_cannot_be_bound_fails_the_sidecar(tmp_path: Path) -> None:
    port = free_port()
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    sidecar = demo_sidecar("web", port, host="192.0.2.1", socket=INHERIT)
    with start(tmp_path, [sidecar]) as daemon:
        failed = daemon.wait_for("sidecar_start_failed")
        assert str(failed["reason"]).startswith(f"cannot bind 192.0.2.1:{port} (socket.inherit): ")
        assert not daemon.find("sidecar_spawned")
        daemon.dump_status()
        (entry,) = read_json(tmp_path / "state" / "status.json")["sidecars"]
        assert entry["state"] == "failed"
        assert daemon.stop() == 0


@PROC_FD
def test_the_socket_is_never_leaked_to_other_sidecars(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    with start(
        tmp_path, [demo_sidecar("web", port, socket=INHERIT), demo_sidecar("plain", other)]
    ) as daemon:
        inode = daemon.wait_for("socket_bound")["inode"]
        plain = daemon.wait_for("sidecar_ready", sidecar="plain")["pid"]
        daemon.wait_for("sidecar_ready", sidecar="web")
        assert inode not in socket_inodes(plain)
        assert "LISTEN_FDS" not in psutil.Process(plain).environ()
        assert daemon.stop() == 0


def test_port_command_names_the_daemon_as_the_holder_of_its_inherited_socket(
    tmp_path: Path,
) -> None:
    port = free_port()
    with start(tmp_path, [demo_sidecar("web", port, socket=INHERIT)]) as daemon:
        child = daemon.wait_for("sidecar_ready")["pid"]
        result = subprocess.run(
            [PYTHON, "-m", "supervisor", "port", str(port), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        holders = {h["pid"]: h for h in json.loads(result.stdout)["holders"]}
        assert set(holders) == {daemon.pid, child}
        assert holders[daemon.pid]["verdict"] == "foreign"  # never reclaimed by anyone
        assert "socket.inherit" in holders[daemon.pid]["reason"]
        assert holders[child]["verdict"] == "live"
        assert daemon.stop() == 0
