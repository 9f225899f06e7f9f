"""`children.spawn(listen_fd=...)` and the inherited socket, with real children and sockets."""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from supervisor.sidecar import inherit
from supervisor.system import children
from tests.support import PYTHON, free_port

REPORT = """
import json, os, stat, sys
fds = {}
for fd in range(64):
    try:
        info = os.fstat(fd)
    except OSError:
        continue
    fds[fd] = {"ino": info.st_ino, "sock": stat.S_ISSOCK(info.st_mode), "rdev": info.st_rdev}
print(json.dumps({
    "pid": os.getpid(),
    "argv": sys.argv[1:],
    "env": {k: v for k, v in os.environ.items() if k.startswith(("LISTEN_", "ODD", "odd", "-"))},
    "fds": fds,
    "blocking3": os.get_blocking(3) if 3 in fds else None,
}), flush=True)
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen(8)
    yield sock
    sock.close()


def run_report(
    listen_fd: int | None, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    full_env = {**os.environ, **(env or {})}
    child = children.spawn(
        [PYTHON, "-c", REPORT, *args], cwd=None, env=full_env, listen_fd=listen_fd
    )
    try:
        child.popen.wait(30)
        assert child.popen.stdout is not None
        os.set_blocking(child.popen.stdout.fileno(), True)
        out = child.popen.stdout.read()
    finally:
        child.reap()
        child.close()
    report: dict[str, Any] = json.loads(out)
    assert report["pid"] == child.pid  # the shim exec'd the command in the same process
    return report


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_listen_fd_becomes_fd_3_and_listen_pid_names_the_child_itself(
    listener: socket.socket,
) -> None:
    report = run_report(listener.fileno(), env=inherit.listen_env("web"))
    assert report["env"] == {
        "LISTEN_FDS": "1",
        "LISTEN_PID": str(report["pid"]),
        "LISTEN_FDNAMES": "web",
    }
    fds = {int(fd): info for fd, info in report["fds"].items()}
    assert fds[3]["sock"] and fds[3]["ino"] == inode(listener)
    # stdin is /dev/null again, and the socket is nowhere else in the child.
    assert fds[0]["rdev"] == os.stat("/dev/null").st_rdev
    assert [fd for fd, info in fds.items() if info["ino"] == inode(listener)] == [3]
    assert report["blocking3"] is True


def test_a_spawn_without_listen_fd_never_gets_the_socket(listener: socket.socket) -> None:
    report = run_report(None)
    assert not [info for info in report["fds"].values() if info["ino"] == inode(listener)]
    assert report["env"] == {}
    assert sorted(int(fd) for fd in report["fds"]) == [0, 1, 2]


def test_argv_reaches_the_child_exactly_and_no_shell_parses_it(
    listener: socket.socket, tmp_path: Path
) -> None:
    planted = tmp_path / "planted"
    words = ["$(touch " + str(planted) + ")", "a b", "'\"", ";", "*", "-x", "", "\\n"]
    report = run_report(listener.fileno(), *words)
    assert report["argv"] == words
    assert not planted.exists()


def test_environment_names_a_shell_would_drop_still_reach_the_child(
    listener: socket.socket,
) -> None:
    env = {"ODD-NAME": "1", "odd.name": "two words", "ODD_OK": "x=y", "-odd": "dash"}
    report = run_report(listener.fileno(), env=env)
    assert {k: report["env"][k] for k in env} == env


def spawn_error(argv: Sequence[str], cwd: Path | None, env: dict[str, str], fd: int | None) -> str:
    with pytest.raises(children.SpawnError) as info:
        children.spawn(argv, cwd=cwd, env=env, listen_fd=fd)
    return str(info.value)


@pytest.mark.parametrize(
    "case", ["missing", "missing-relative", "not-executable", "in-path-not-executable", "a-dir"]
)
def test_spawn_errors_read_the_same_with_a_listen_fd(
    case: str, listener: socket.socket, tmp_path: Path
) -> None:
    script = tmp_path / "tool"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ.get('PATH', '')}"}
    argv, cwd = {
        "missing": (["no-such-command-4711"], None),
        "missing-relative": (["./no-such-file"], tmp_path),
        "not-executable": ([str(script)], None),
        "in-path-not-executable": (["tool"], None),
        "a-dir": ([str(tmp_path)], None),
    }[case]
    plain = spawn_error(argv, cwd, env, None)
    assert spawn_error(argv, cwd, env, listener.fileno()) == plain


def test_a_missing_working_directory_reads_the_same_with_a_listen_fd(
    listener: socket.socket, tmp_path: Path
) -> None:
    env = dict(os.environ)
    missing = tmp_path / "gone"
    plain = spawn_error([PYTHON, "-c", "pass"], missing, env, None)
    assert spawn_error([PYTHON, "-c", "pass"], missing, env, listener.fileno()) == plain
    assert str(missing) in plain


@pytest.mark.anyio
async def test_each_spawn_gets_the_socket_blocking_and_listening_again() -> None:
    sockets = inherit.Sockets()
    port = free_port()
    try:
        first = await sockets.acquire("web", "127.0.0.1", port)
        # What a previous child may have done to the one socket every holder shares.
        os.set_blocking(first.fd, False)
        first.sock.listen(1)
        again = await sockets.acquire("web", "127.0.0.1", port)
        assert again is first
        assert os.get_blocking(first.fd)
        report = run_report(first.fd)
        assert report["blocking3"] is True
    finally:
        sockets.close_all()


@pytest.mark.anyio
async def test_a_socket_shut_down_by_a_holder_is_bound_anew() -> None:
    sockets = inherit.Sockets()
    port = free_port()
    try:
        first = await sockets.acquire("web", "127.0.0.1", port)
        first.sock.shutdown(socket.SHUT_RDWR)  # any holder can end the listening for all
        second = await sockets.acquire("web", "127.0.0.1", port)
        assert second is not first and first.sock.fileno() == -1
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        sockets.close_all()


@pytest.mark.anyio
async def test_the_address_decides_whether_a_socket_is_kept() -> None:
    sockets = inherit.Sockets()
    port, other = free_port(), free_port()
    try:
        first = await sockets.acquire("web", "127.0.0.1", port)
        assert sockets.inodes() == {first.inode}
        sockets.retain({"web": ("127.0.0.1", port)})
        assert sockets.get("web") is first
        moved = await sockets.acquire("web", "127.0.0.1", other)
        assert moved is not first and first.sock.fileno() == -1
        sockets.retain({})
        assert sockets.get("web") is None and moved.sock.fileno() == -1
        with socket.socket() as probe:  # both ports are free again
            probe.bind(("127.0.0.1", port))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", other))
    finally:
        sockets.close_all()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("host", "in_use"),
    [("192.0.2.1", False), ("no-such-host.invalid", False), ("127.0.0.1", True)],
    ids=["not-local", "unresolvable", "in-use"],
)
async def test_bind_errors_say_what_and_whether_waiting_helps(host: str, in_use: bool) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        with pytest.raises(inherit.BindError) as info:
            await inherit.bind(host, port)
    assert info.value.in_use is in_use
    assert str(info.value).startswith("cannot bind ")
