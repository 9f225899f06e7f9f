"""sd_notify through real AF_UNIX datagram sockets: a path one and a Linux abstract one."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.system.notify import Notifier

RECV_TIMEOUT_S = 5.0


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(RECV_TIMEOUT_S)
    return sock


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode("utf-8")


@pytest.fixture(params=["path", "abstract"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, socket.socket]]:
    """(NOTIFY_SOCKET value, the bound receiving socket)."""
    if request.param == "path":
        value = str(tmp_path / "notify.sock")
        if len(value.encode()) >= 100:
            pytest.skip("tmp_path too long for an AF_UNIX socket path")
        address = value
    else:
        if sys.platform != "linux":
            pytest.skip("abstract AF_UNIX sockets are Linux-only")
        value = f"@sidecar-test-{secrets.token_hex(8)}"
        address = "\0" + value[1:]
    sock = _receiver(address)
    try:
        yield value, sock
    finally:
        sock.close()


@pytest.fixture
def notifier_for(notify_socket: tuple[str, socket.socket]) -> Iterator[Notifier]:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": notify_socket[0]})
    try:
        yield notifier
    finally:
        notifier.close()


@pytest.mark.parametrize(
    ("call", "payload"),
    [
        (Notifier.ready, "READY=1"),
        (Notifier.stopping, "STOPPING=1"),
        (Notifier.watchdog, "WATCHDOG=1"),
        (
            lambda n: n.status("agent-monitor: ready (pid 123)"),
            "STATUS=agent-monitor: ready (pid 123)",
        ),
        (lambda n: n.status("two\nlines\r\nhere\n"), "STATUS=two lines here"),
        (lambda n: n.send("READY=1", "STATUS=up"), "READY=1\nSTATUS=up"),
    ],
)
def test_sends_exact_payload(
    notify_socket: tuple[str, socket.socket],
    notifier_for: Notifier,
    call: Callable[[Notifier], None],
    payload: str,
) -> None:
    assert notifier_for.enabled
    call(notifier_for)
    assert _recv(notify_socket[1]) == payload


def test_reloading_carries_monotonic_usec(
    notify_socket: tuple[str, socket.socket], notifier_for: Notifier
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier_for.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, usec = _recv(notify_socket[1]).split("\n")
    assert reloading == "RELOADING=1"
    name, _, value = usec.partition("=")
    assert name == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_messages_arrive_in_order_on_one_connection(
    notify_socket: tuple[str, socket.socket], notifier_for: Notifier
) -> None:
    notifier_for.reloading()
    notifier_for.ready()
    notifier_for.stopping()
    assert _recv(notify_socket[1]).startswith("RELOADING=1\n")
    assert _recv(notify_socket[1]) == "READY=1"
    assert _recv(notify_socket[1]) == "STOPPING=1"


def test_without_notify_socket_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s() is None
    notifier.ready()
    notifier.status("x")
    notifier.reloading()
    notifier.stopping()
    notifier.watchdog()
    notifier.close()


@pytest.mark.parametrize("value", ["", "relative/path", "@", "vsock:2:1234"])
def test_unusable_notify_socket_disables(value: str) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s() is None


def test_missing_listener_is_swallowed_and_retried(tmp_path: Path) -> None:
    address = str(tmp_path / "late.sock")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    try:
        notifier.ready()  # nobody listens yet: dropped, no exception
        with _receiver(address) as receiver:
            notifier.status("listening now")
            assert _recv(receiver) == "STATUS=listening now"
        notifier.stopping()  # the listener is gone again
    finally:
        notifier.close()


def test_full_queue_never_blocks_nor_raises(tmp_path: Path) -> None:
    address = str(tmp_path / "full.sock")
    with _receiver(address) as receiver:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
        try:
            started = time.monotonic()
            for _ in range(2000):  # far beyond the receive queue: EAGAIN, dropped
                notifier.status("x" * 512)
            assert time.monotonic() - started < 5.0
            assert _recv(receiver) == "STATUS=" + "x" * 512
        finally:
            notifier.close()


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    tmp_path: Path, environ: dict[str, str], interval_s: float | None
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "n.sock"), **environ})
    assert notifier.watchdog_interval_s() == interval_s
