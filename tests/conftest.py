"""Shared fixtures: the anyio backends and the process-leak guard every test runs under."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

if TYPE_CHECKING:
    from supervisor.system import cgroups

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    # Orphans of the daemons we start (e.g. the child of a SIGKILLed daemon) are reparented to us
    # instead of to init, so the leak guard still sees them and can reap them.
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_become_subreaper()


def _compile_sources() -> None:
    """Byte-compile the package once, as an install does. Every test starts real daemons and
    commands (`python -m supervisor`); where PYTHONDONTWRITEBYTECODE is set (this machine sets
    it for every process), each of them compiled all ~70 modules from source again: 46 s
    instead of 19 s for the control-CLI and `port` tests here, and ~0.2 s more per daemon
    start under every timing the tests observe. Writes only __pycache__/ beside the sources
    (as Python itself would)."""
    import compileall

    compileall.compile_dir(Path(__file__).resolve().parent.parent / "supervisor", quiet=2)


_compile_sources()

# The per-user registry of running daemons (supervisor/registry.py): this session's daemons and
# commands use a private one, so a developer's own daemon (or another session's) is never found,
# and ours never appear in theirs. Tests of discovery set their own.
_REGISTRY = tempfile.TemporaryDirectory(prefix="supervisor-test-runtime-")
os.environ["SUPERVISOR_RUNTIME_DIR"] = _REGISTRY.name


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The in-process async tests run on every backend anyio offers: the code stays inside anyio
    (no asyncio import anywhere in supervisor/), so the backend is a choice, and this proves it."""
    backend: str = request.param
    if backend == "trio":
        pytest.importorskip("trio", reason="trio is not installed (pip install -e '.[test]')")
    return backend


def _reap_zombies(me: psutil.Process) -> None:
    for child in me.children():
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves any process of its own behind; kill and reap what it left."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    _reap_zombies(me)
    left = [p for p in me.children(recursive=True) if p.pid not in before and _is_running(p)]
    if not left:
        return
    # Give processes that are already on their way out a bounded moment to finish.
    _, alive = psutil.wait_procs(left, timeout=3.0)
    alive = [p for p in alive if _is_running(p)]
    described = [_describe(p) for p in alive]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=3.0)
    _reap_zombies(me)
    if described:
        pytest.fail("test leaked processes: " + "; ".join(described), pytrace=False)


def _is_running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:120]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def _signal_state() -> tuple[frozenset[int], dict[int, object]]:
    blocked = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    return blocked, {sig: signal.getsignal(sig) for sig in _WATCHED_SIGNALS}


_WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def no_leaked_signal_state() -> Iterator[None]:
    """Fail a test that leaves this process's signal mask or handlers changed (and restore
    them): every child started afterwards would inherit a blocked SIGINT or SIGTERM, and a
    server or `logs -f` would then ignore the test's Ctrl-C or stop."""
    before = _signal_state()
    yield
    after = _signal_state()
    # Newly blocked signals only: an in-process `cli.main` unblocks the daemon's signals on
    # purpose (a runner started with one blocked would otherwise fail those tests).
    if after[0] <= before[0] and after[1] == before[1]:
        return
    signal.pthread_sigmask(signal.SIG_SETMASK, before[0])
    for sig, handler in before[1].items():
        if handler is not None:
            signal.signal(sig, handler)  # type: ignore[arg-type]
    pytest.fail(f"test left the signal state changed: {before} -> {after}", pytrace=False)


@pytest.fixture(autouse=True)
def no_leaked_cgroups(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove the cgroups (supervisor/cgroups.py) that daemons of this test created for state
    dirs under its tmp_path, which a daemon SIGKILLed by the test could not remove itself; fail a
    test that left processes in them."""
    wanted = sys.platform == "linux" and os.geteuid() == 0 and "tmp_path" in request.fixturenames
    tmp_path = request.getfixturevalue("tmp_path") if wanted else None  # outlives this teardown
    yield
    if tmp_path is None:
        return
    from supervisor.system import cgroups

    try:
        subtree = cgroups.find_subtree()
    except cgroups.CgroupUnavailable:
        return
    left: list[int] = []
    for folder in _state_folders(subtree, tmp_path):
        isolation = cgroups.Isolation(subtree, folder.name.removeprefix(cgroups.STATE_PREFIX))
        for _, cgroup in isolation.existing():
            members = cgroup.members()
            if members:
                left += members
                cgroup.kill()
                deadline = time.monotonic() + 5.0
                while cgroup.populated() and time.monotonic() < deadline:
                    time.sleep(0.01)
        isolation.remove_empty()
    if left:
        pytest.fail(f"test left processes in its cgroups: {sorted(left)}", pytrace=False)


def _state_folders(subtree: cgroups.Subtree, tmp_path: os.PathLike[str]) -> list[Path]:
    """The cgroup folders (`s-<state id>`) of every directory up to 3 levels below tmp_path."""
    from supervisor.system import cgroups

    found = []
    top = Path(tmp_path)
    for folder, dirs, _ in os.walk(top):
        depth = len(Path(folder).relative_to(top).parts)
        if depth >= 3:
            dirs.clear()
        try:
            state_id = cgroups.state_id(Path(folder))
        except OSError:
            continue
        candidate = subtree.base / f"{cgroups.STATE_PREFIX}{state_id}"
        if candidate.is_dir():
            found.append(candidate)
    return found
