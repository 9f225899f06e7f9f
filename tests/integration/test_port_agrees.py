"""One truth (issue 25): `supervisor port P -c CONFIG` says what the next `supervisor run` does.

Per holder kind, with real processes: the verdict `port` prints is the one the next run's
preflight logs, and `port`'s "next run" (unattended: a run with --non-interactive) is what that
run does: kill (`orphan_killed`, then ready) or wait (`sidecar_waiting`, the holder untouched).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import servers
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    gone_owner_tag,
    pid_gone,
    render_config,
    wait_recorded,
    wait_until,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
MARKER = "agree-marker-5d1c"


def port_says(port: int, config: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env["SUPERVISOR_RUNTIME_DIR"] = os.environ["SUPERVISOR_RUNTIME_DIR"]  # the tests' registry
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "port", str(port), "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert result.returncode == 10, result.stdout + result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


@dataclass
class Held:
    """A holder of the port, set up by a kind; `pids` are killed at the end whatever happens."""

    pid: int
    pids: list[int]


def write_config(tmp_path: Path, sidecar: dict[str, object]) -> Path:
    config = tmp_path / "supervisor.toml"
    state = tmp_path / "state"
    # isolation = "none": the evidence `port` reads today (spawn records, tags, the marker)
    config.write_text(
        f'[supervisor]\nstate_dir = "{state}"\nisolation = "none"\n\n' + render_config([sidecar])
    )
    return config


def orphan_of_a_killed_daemon(config: Path, tmp_path: Path) -> Held:
    first = Daemon(config, tmp_path / "state")
    child = int(first.wait_for("sidecar_ready", timeout=30)["pid"])
    wait_recorded(tmp_path / "state", child)
    tree = [child, *(p.pid for p in psutil.Process(child).children(recursive=True))]
    first.kill()
    return Held(child, tree)


def tagged(port: int, tmp_path: Path) -> tuple[Path, Held]:
    config = write_config(tmp_path, demo_sidecar("web", port))
    return config, orphan_of_a_killed_daemon(config, tmp_path)


def retitled(port: int, tmp_path: Path) -> tuple[Path, Held]:
    try:
        server = servers.retitle_server(port, tmp_path / "server")
    except servers.ServerUnavailable as exc:
        pytest.skip(str(exc))
    config = write_config(tmp_path, server.sidecar("web"))
    return config, orphan_of_a_killed_daemon(config, tmp_path)


# Our sidecar's command forks a server that calls setsid() and listens, then clobbers its
# environment (no tags left) - a daemonized server whose parent, our recorded child, lives on.
SETSID_SERVER = textwrap.dedent(
    """
    import ctypes, os, socket, sys, time
    port = int(sys.argv[1])
    if os.fork() == 0:
        os.setsid()
        os.environ.clear()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        while True:
            conn, _ = s.accept()
            conn.close()
    time.sleep(3600)
    """
)


def daemonized(port: int, tmp_path: Path) -> tuple[Path, Held]:
    sidecar: dict[str, object] = {
        "name": "web",
        "command": [PYTHON, "-c", SETSID_SERVER, str(port)],
        "port": port,
        "marker": MARKER,  # in nobody's command line: only the spawn record proves it
        "ready": {"probe": "tcp"},
    }
    config = write_config(tmp_path, sidecar)
    held = orphan_of_a_killed_daemon(config, tmp_path)
    server = next(p for p in held.pids if os.getsid(p) == p and p != held.pid)
    return config, Held(server, held.pids)


@contextlib.contextmanager
def holder_kind(
    kind: Callable[[int, Path], tuple[Path, Held]], port: int, tmp_path: Path
) -> Iterator[tuple[Path, Held]]:
    held: Held | None = None
    try:
        config, held = kind(port, tmp_path)
        yield config, held
    finally:
        for pid in held.pids if held else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def by_hand(
    port: int,
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    user_cmd: list[str] | None = None,
) -> Iterator[tuple[Path, Held]]:
    """A holder started outside any supervisor, with the sidecar's marker in its argv."""
    sidecar = demo_sidecar("web", port, marker=MARKER)
    config = write_config(tmp_path, sidecar)
    with Holder(port, "127.0.0.1", "-", env=env, argv0_marker=MARKER, user_cmd=user_cmd or []) as h:
        yield config, Held(h.pid, [])


def hand_started(port: int, tmp_path: Path) -> contextlib.AbstractContextManager[tuple[Path, Held]]:
    return by_hand(port, tmp_path)


def stranger(port: int, tmp_path: Path) -> contextlib.AbstractContextManager[tuple[Path, Held]]:
    sidecar = demo_sidecar("web", port, marker=MARKER)
    config = write_config(tmp_path, sidecar)

    @contextlib.contextmanager
    def held() -> Iterator[tuple[Path, Held]]:
        with Holder(port) as h:  # no marker, no tag, no record
            yield config, Held(h.pid, [])

    return held()


def tagged_by_hand(
    port: int, tmp_path: Path
) -> contextlib.AbstractContextManager[tuple[Path, Held]]:
    """Tags of a daemon that is gone (copied, say, from a shell that a sidecar opened)."""
    env = {"SUPERVISOR_SIDECAR": "web", "SUPERVISOR_OWNER": gone_owner_tag()}
    return by_hand(port, tmp_path, env=env)


def other_uid(port: int, tmp_path: Path) -> contextlib.AbstractContextManager[tuple[Path, Held]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to start a holder as another user")
    if not _has_setpriv():
        pytest.skip("setpriv is not installed")
    user_cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return by_hand(port, tmp_path, user_cmd=user_cmd)


def _has_setpriv() -> bool:
    import grp
    import shutil

    try:
        grp.getgrnam("nogroup")
    except KeyError:
        return False
    return shutil.which("setpriv") is not None


KINDS: dict[str, Callable[[int, Path], contextlib.AbstractContextManager[tuple[Path, Held]]]] = {
    "tagged": lambda port, tmp: holder_kind(tagged, port, tmp),
    "retitled": lambda port, tmp: holder_kind(retitled, port, tmp),
    "daemonized": lambda port, tmp: holder_kind(daemonized, port, tmp),
    "tagged-by-hand": tagged_by_hand,
    "hand-started": hand_started,
    "stranger": stranger,
    "other-uid": other_uid,
}
EXPECTED = {  # verdict, unattended action: written out so that a change fails here too
    "tagged": ("orphan", "kill"),
    "retitled": ("orphan", "kill"),
    "daemonized": ("orphan", "kill"),
    "tagged-by-hand": ("orphan", "kill"),
    "hand-started": ("unproven", "wait"),
    "stranger": ("foreign", "wait"),
    "other-uid": ("foreign", "wait"),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_port_says_what_the_next_run_does(kind: str, tmp_path: Path) -> None:
    port = free_port()
    with KINDS[kind](port, tmp_path) as (config, held):
        wait_until(lambda: held.pid in _listeners(port), 15.0, "the holder to listen")
        said = port_says(port, config)
        verdicts = {h["pid"]: h["verdict"] for h in said["holders"]}
        verdict = verdicts[held.pid]
        action = said["next_run"]["unattended"]
        assert (verdict, action) == EXPECTED[kind], said
        with Daemon(config, tmp_path / "state", "--non-interactive") as run:
            found = run.wait_for("reconcile_holder_found", pid=held.pid, timeout=30)
            assert found["verdict"] == verdict
            match action:
                case "kill":
                    run.wait_for("orphan_killed", pid=held.pid, timeout=30)
                    run.wait_for("sidecar_ready", timeout=30)
                    wait_until(lambda: pid_gone(held.pid), 10.0, "the holder to be gone")
                case "wait":
                    waiting = run.wait_for("sidecar_waiting", timeout=30)
                    assert waiting["verdict"] == verdict
                    assert not run.find("orphan_killed") and not run.find("live_holder_killed")
                    assert not pid_gone(held.pid)
                case _:
                    raise AssertionError(f"unexpected action {action}")
            assert run.stop() == 0


def _listeners(port: int) -> set[int]:
    return {
        c.pid
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
    }
