"""Finding port holders with real listeners: every address kind, fallbacks, other users, forks."""

from __future__ import annotations

import contextlib
import errno
import functools
import grp
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import psutil
import pytest

from supervisor.reconcile import holders
from supervisor.system import net, procs
from supervisor.system.net import Listener, fallbacks, netlink
from tests.support import (
    PYTHON,
    Holder,
    _readline,
    free_port,
    pid_gone,
    run_script,
    wait_until,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="netlink sock_diag is Linux-only")

ADDRESSES = [
    pytest.param("127.0.0.1", (), "127.0.0.1", id="loopback4"),
    pytest.param("0.0.0.0", (), "0.0.0.0", id="any4"),
    pytest.param("::", (), "[::]", id="any6-dual-stack"),
    pytest.param("::", ("v6only",), "[::]", id="any6-v6only"),
    pytest.param("::1", (), "[::1]", id="loopback6"),
]


def pid_address_pairs(port: int) -> set[tuple[int | None, str]]:
    return {(h.pid, a) for h in holders.find_holders(port) for a in h.addresses}


def listener_pairs(listeners: tuple[Listener, ...]) -> set[tuple[int | None, str]]:
    return {(lst.pid, lst.address) for lst in listeners}


@pytest.mark.parametrize(("host", "flags", "shown"), ADDRESSES)
def test_holder_found_on_every_address_kind(host: str, flags: tuple[str, ...], shown: str) -> None:
    port = free_port(ipv6=True)
    with Holder(port, host, *flags) as holder:
        found = holders.find_holders(port)
        assert [(h.pid, h.addresses) for h in found] == [(holder.pid, (f"{shown}:{port}",))]
        (only,) = found
        assert only.uid == os.getuid()
        assert only.facts is not None
        assert only.facts.pid == holder.pid
        assert only.facts.environ is not None
        listeners = net.find_listeners(port)
        assert [lst.address for lst in listeners] == [f"{shown}:{port}"]


def test_free_port_has_no_listeners_and_no_holders() -> None:
    port = free_port(ipv6=True)
    assert net.find_listeners(port) == ()
    assert holders.find_holders(port) == ()
    assert net.pids_listening(port, [os.getpid()]) == set()


def test_two_holders_on_one_port_are_both_found() -> None:
    port = free_port(ipv6=True)
    with Holder(port, "0.0.0.0") as v4, Holder(port, "::", "v6only") as v6:
        assert pid_address_pairs(port) == {(v4.pid, f"0.0.0.0:{port}"), (v6.pid, f"[::]:{port}")}


def test_pids_listening_names_only_the_holder() -> None:
    port = free_port()
    with Holder(port) as holder, Holder(free_port()) as bystander:
        assert net.pids_listening(port, [holder.pid]) == {holder.pid}
        assert net.pids_listening(port, [bystander.pid, os.getpid()]) == set()
        assert net.pids_listening(port, [bystander.pid, holder.pid]) == {holder.pid}
        assert net.pids_listening(port, []) == set()


@linux_only
def test_netlink_reports_inode_and_uid_but_no_pid() -> None:
    port = free_port()
    with Holder(port):
        (listener,) = netlink.listeners(port)
        assert listener.address == f"127.0.0.1:{port}"
        assert listener.uid == os.getuid()
        assert listener.inode is not None
        assert listener.pid is None


@linux_only
@pytest.mark.parametrize(("host", "flags", "shown"), ADDRESSES)
def test_psutil_fallback_agrees_with_netlink(host: str, flags: tuple[str, ...], shown: str) -> None:
    port = free_port(ipv6=True)
    with Holder(port, host, *flags):
        expected = pid_address_pairs(port)
        assert listener_pairs(fallbacks.listeners_psutil(port)) == expected
        assert listener_pairs(fallbacks.listeners_per_process(port)) == expected


@linux_only
@pytest.mark.skipif(shutil.which("lsof") is None, reason="lsof is not installed")
@pytest.mark.parametrize(("host", "flags", "shown"), ADDRESSES)
def test_lsof_fallback_agrees_with_netlink(host: str, flags: tuple[str, ...], shown: str) -> None:
    port = free_port(ipv6=True)
    with Holder(port, host, *flags):
        expected = pid_address_pairs(port)
        found = fallbacks.listeners_lsof(port)
        assert listener_pairs(found) == expected
        assert {lst.uid for lst in found} == {os.getuid()}


def test_lsof_output_parsing_maps_wildcards_by_family() -> None:
    output = "p10\nu1000\nf3\ntIPv4\nn*:5000\nf4\ntIPv6\nn*:5000\nf5\ntIPv6\nn[::1]:5000\n"
    found = list(fallbacks.parse_lsof(output, 5000))
    assert found == [
        Listener("0.0.0.0:5000", 1000, None, 10),
        Listener("[::]:5000", 1000, None, 10),
        Listener("[::1]:5000", 1000, None, 10),
    ]


def _other_user_cmd() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a holder as another user")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this system")
    group = next((g for g in ("nogroup", "nobody") if _group_exists(g)), None)
    if shutil.which("setpriv") and group is not None:
        return ["setpriv", "--reuid=nobody", f"--regid={group}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    pytest.skip("neither setpriv nor runuser is installed")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@linux_only
@pytest.mark.root
def test_holder_of_another_uid_is_identified_when_we_are_root() -> None:
    # Root may read every fd table: the holder of another uid gets its pid (and its facts, for
    # the diagnostic); the classifier calls it foreign for its uid alone.
    user_cmd = _other_user_cmd()
    nobody = pwd.getpwnam("nobody").pw_uid
    port = free_port()
    with Holder(port, "127.0.0.1", user_cmd=user_cmd) as holder:
        (found,) = holders.find_holders(port)
        assert (found.pid, found.uid, found.addresses) == (
            holder.pid,
            nobody,
            (f"127.0.0.1:{port}",),
        )
        assert found.facts is not None and found.facts.user == "nobody"


FORKING_SCRIPT = textwrap.dedent(
    """
    import os, socket, sys, time
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen(16)
    role = "worker" if os.fork() == 0 else "master"
    os.write(1, f"{role} {os.getpid()}\\n".encode())  # one write: the two lines never interleave
    while True:
        time.sleep(60)
    """
)


@pytest.fixture
def forked_workers() -> Iterator[tuple[int, int, int]]:
    """A listening master and a forked worker sharing its socket: (port, master, worker)."""
    port = free_port()
    proc = subprocess.Popen(
        [PYTHON, "-c", FORKING_SCRIPT, str(port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    roles: dict[bytes, int] = {}
    try:
        for _ in range(2):
            words = _readline(proc.stdout, 10.0).split()
            if len(words) == 2:
                roles[words[0]] = int(words[1])
        assert set(roles) == {b"master", b"worker"}, roles
        yield port, roles[b"master"], roles[b"worker"]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        # The orphaned worker is reparented to pytest (a subreaper); the leak guard reaps it.
        for pid in roles.values():
            wait_until(functools.partial(pid_gone, pid), 10.0, f"process {pid} to exit")


@linux_only
def test_forked_worker_sharing_the_socket_is_found_from_a_scan(
    forked_workers: tuple[int, int, int],
) -> None:
    port, master, worker = forked_workers
    address = f"127.0.0.1:{port}"
    assert pid_address_pairs(port) == {(master, address), (worker, address)}
    assert net.pids_listening(port, [worker]) == {worker}


@contextlib.contextmanager
def _blocked_child(argv: list[bytes], env: dict[bytes, bytes], shown: bytes) -> Iterator[int]:
    """A child that waits on its stdin with `argv` and `env`, once /proc shows `shown` as its
    command line (bash's `exec -a` changes it); it ends when the pipe closes."""
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: _cmdline(child.pid) == shown, 10, f"the child to show {shown!r}")
        yield child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read()


@linux_only
@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        pytest.param(
            [b"bash", b"-c", b"exec -a 'my sidecar' cat"],
            b"my sidecar\0",
            id="one-argument-with-spaces",
        ),
        pytest.param(
            [b"bash", b"-c", b"read line", b"\xff not utf-8", b"two words", b""],
            b"bash\0-c\0read line\0\xff not utf-8\0two words\0\0",
            id="odd-arguments",
        ),
        pytest.param([b"cat", b"-"], b"cat\0-\0", id="plain"),
    ],
)
def test_process_facts_read_from_proc_are_psutils(argv: list[bytes], shown: bytes) -> None:
    # On Linux the facts are read from /proc without psutil (its import was on the launch's
    # path over an orphan); the classifier must see exactly what psutil showed it.
    env = {b"PATH": os.environb[b"PATH"], b"EMPTY": b"", b"EQ": b"a=b=c", b"UNI": "é".encode()}
    with _blocked_child(argv, env, shown) as pid:
        ours = procs._facts_from_proc(pid, True)
        assert ours is not None
        assert ours == procs._facts_from_psutil(pid, True)
        assert ours.environ is not None
        shown_env = (ours.environ["EMPTY"], ours.environ["EQ"], ours.environ["UNI"])
        assert shown_env == ("", "a=b=c", "é")
        assert procs._facts_from_proc(pid, False) == procs._facts_from_psutil(pid, False)
    if argv[2:3] == [b"exec -a 'my sidecar' cat"]:
        assert ours.cmdline == ("my", "sidecar")  # psutil's reading of a title with spaces
    me = os.getpid()
    assert procs._facts_from_proc(me, True) == procs._facts_from_psutil(me, True)


@linux_only
def test_process_facts_of_a_zombie_and_of_a_reaped_child_are_none() -> None:
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    created = procs.create_time(child.pid)
    assert created is not None
    assert procs._facts_from_proc(child.pid, True) is None
    assert procs._facts_from_psutil(child.pid, True) is None
    child.wait(10)
    gone = procs._facts_from_proc(child.pid, True)
    assert gone is None or gone.create_time != created  # (its pid may be another's by now)


FACTS_WITHOUT_FDS = textwrap.dedent(
    """
    import os
    from supervisor.system import procs
    from tests.helpers.nofds import no_fd_left
    with no_fd_left():
        try:
            found = procs.facts(os.getpid())
        except OSError as exc:
            outcome = f"raised {exc.errno}"
        else:
            outcome = f"answered {found is not None}"
    print(outcome)
    """
)


@linux_only
def test_process_facts_without_a_free_fd_raise_instead_of_saying_gone() -> None:
    # "Gone" would let a sweep forget a ledger entry whose process lives (issue 25): a read
    # that cannot be made is an error, as it was with psutil.
    assert run_script(FACTS_WITHOUT_FDS) == f"raised {errno.EMFILE}"


@linux_only
def test_ancestors_read_from_proc_are_psutils() -> None:
    # A grandchild (bash -> cat) and the test itself: the chain up to pid 1 (or to the pid
    # namespace's edge) as psutil's parents() gives it.
    with _blocked_child(
        [b"bash", b"-c", b"cat; true"], {b"PATH": os.environb[b"PATH"]}, b"bash\0-c\0cat; true\0"
    ) as shell:
        wait_until(lambda: bool(psutil.Process(shell).children()), 10, "bash to start cat")
        (cat,) = psutil.Process(shell).children()
        chain = procs._ancestors_from_proc(cat.pid)
        assert chain[:2] == [shell, os.getpid()]
        assert chain == procs._ancestors_from_psutil(cat.pid)
    assert procs._ancestors_from_proc(os.getpid()) == procs._ancestors_from_psutil(os.getpid())
