"""sd_notify from a real daemon through a real AF_UNIX datagram socket (path and abstract)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Daemon, demo_sidecar, free_port, render_config


class Listener:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[str] = []

    def wait_for(self, predicate_text: str, timeout: float = 15.0, *, after: int = 0) -> str:
        """Receive until a message containing `predicate_text` arrives (bounded).

        Only messages from position `after` on count.
        """
        deadline = time.monotonic() + timeout
        for message in self.messages[after:]:
            if predicate_text in message:
                return message
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {predicate_text!r} in {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = data.decode()
            self.messages.append(message)
            if predicate_text in message:
                return message


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Listener]]:
    if request.param == "abstract" and sys.platform != "linux":
        pytest.skip("abstract sockets are Linux-only")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    else:
        name = f"sidecar-notify-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    try:
        yield address, Listener(sock)
    finally:
        sock.close()


def test_daemon_speaks_sd_notify(tmp_path: Path, notify_socket: tuple[str, Listener]) -> None:
    address, listener = notify_socket
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", free_port())]))
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    with Daemon(config, tmp_path / "state", env=env) as daemon:
        listener.wait_for("READY=1")
        ready = daemon.wait_for("sidecar_ready")
        listener.wait_for(f"STATUS=web: ready (pid {ready['pid']})")
        first = listener.wait_for("WATCHDOG=1")
        listener.messages.remove(first)
        listener.wait_for("WATCHDOG=1")  # periodic, not once

        daemon.signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING=1")
        assert "MONOTONIC_USEC=" in reloading
        daemon.wait_for("config_reloaded")
        listener.wait_for("READY=1", after=listener.messages.index(reloading) + 1)

        daemon.signal(signal.SIGTERM)
        listener.wait_for("STOPPING=1")
        assert daemon.proc.wait(10) == 0
    # The sidecar never sees the daemon's notify socket.
    assert not any("NOTIFY_SOCKET" in str(e.get("line", "")) for e in daemon.events)


SLOW_LISTENER = (
    "import socket, sys, time\n"
    "time.sleep(float(sys.argv[2]))\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "print('listening', flush=True)\n"
    "while True: s.accept()[0].close()\n"
)


def test_ready_waits_for_every_sidecars_first_outcome(
    tmp_path: Path, notify_socket: tuple[str, Listener]
) -> None:
    """READY=1 only once the slow sidecar is ready (and EXTEND_TIMEOUT_USEC meanwhile): what
    makes `systemctl start` return when the sidecars serve."""
    address, listener = notify_socket
    slow_port = free_port()
    slow = {
        "name": "slow",
        "command": [sys.executable, "-c", SLOW_LISTENER, str(slow_port), "1.5"],
        "port": slow_port,
    }
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", free_port()), slow]))
    with Daemon(config, tmp_path / "state", env={"NOTIFY_SOCKET": address}) as daemon:
        listener.wait_for("READY=1", timeout=20)
        messages = listener.messages
        ready_at = messages.index("READY=1")
        # Both were ready before READY=1 was sent: the STATUS line said so first.
        both = [i for i, m in enumerate(messages) if "web: ready" in m and "slow: ready" in m]
        assert both and both[0] < ready_at, messages
        extend = [i for i, m in enumerate(messages) if m.startswith("EXTEND_TIMEOUT_USEC=")]
        assert extend and extend[0] < ready_at, messages
        daemon.wait_for("sidecar_ready", sidecar="slow")
        assert daemon.stop() == 0


def test_ready_comes_for_a_sidecar_that_waits(
    tmp_path: Path, notify_socket: tuple[str, Listener]
) -> None:
    """`waiting` is an outcome too: a port held by a stranger must not hold up READY=1."""
    from tests.support import Holder

    address, listener = notify_socket
    port = free_port()
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", port)]))
    with Holder(port), Daemon(config, tmp_path / "state", env={"NOTIFY_SOCKET": address}) as d:
        listener.wait_for("READY=1")
        d.wait_for("sidecar_waiting")
        assert d.stop() == 0
