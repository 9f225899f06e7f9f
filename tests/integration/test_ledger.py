"""Ownership that survives retitling and crashes: the spawn ledger, with real servers.

redis and nginx (Debian's packages; skipped where absent) and tests/helpers/retitle.py rewrite
their process title and clobber /proc/PID/environ: neither the marker nor the SUPERVISOR_* tags
survive. Orphaned by a SIGKILLed daemon, they must still be reclaimed by the next one, through
the ledger.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import servers
from tests.support import (
    PYTHON,
    Daemon,
    demo_sidecar,
    free_port,
    pid_gone,
    port_free,
    read_json,
    render_config,
    stamp_ns,
    wait_recorded,
    wait_until,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the ledger tests read /proc")

SERVERS: dict[str, Callable[[int, Path], servers.Server]] = {
    "redis": servers.redis_server,
    "nginx": servers.nginx_server,
    "retitle": servers.retitle_server,
    "retitle-workers": functools.partial(servers.retitle_server, workers=2),
}


def make_server(kind: str, port: int, directory: Path, **kwargs: Any) -> servers.Server:
    factory = SERVERS[kind]
    try:
        return factory(port, directory, **kwargs)
    except servers.ServerUnavailable as exc:
        pytest.skip(str(exc))


def write_config(
    path: Path, sidecars: list[dict[str, object]], isolation: str = "none"
) -> Path:
    # By default the evidence without a cgroup (the ledger, the tags): a cgroup would reclaim
    # all of it before any of it is looked at (tests/integration/test_cgroups.py).
    path.write_text(render_config(sidecars, {"isolation": isolation}))
    return path


def tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    try:
        proc = psutil.Process(pid)
        return [pid, *(child.pid for child in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def listeners_of(port: int) -> set[int]:
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port
        if listening and conn.pid is not None:
            found.add(conn.pid)
    return found


def all_gone(pids: list[int]) -> bool:
    return all(pid_gone(pid) for pid in pids)


@contextlib.contextmanager
def cleanup(pids: list[int]) -> Iterator[None]:
    """Whatever a failing test left of the servers, it does not outlive the test."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("kind", list(SERVERS))
def test_retitled_orphan_is_reclaimed_by_the_ledger(kind: str, tmp_path: Path) -> None:
    port = free_port()
    server = make_server(kind, port, tmp_path / "server")
    config = write_config(tmp_path / "supervisor.toml", [server.sidecar("web")])
    state = tmp_path / "state"
    first = Daemon(config, state)
    orphans: list[int] = []
    with cleanup(orphans):
        pid = first.wait_for("sidecar_ready", timeout=30)["pid"]
        wait_until(lambda: len(listeners_of(port)) >= 1, 10.0, "the server to listen")
        orphans += tree(pid)
        holder = sorted(listeners_of(port))[0]
        if kind != "nginx":  # nginx's master keeps the marker; its workers do not
            marker = " ".join(server.command)
            assert servers.visible_identity(holder, marker) == [], "the disguise did not work"
        wait_recorded(state, pid)
        first.kill()  # the daemon dies uncleanly; the server goes on
        assert all(not pid_gone(p) for p in orphans) and not port_free(port)

        with Daemon(config, state) as second:
            killed = second.wait_for("orphan_killed", timeout=30)
            assert killed["pid"] in orphans
            found = second.find("reconcile_holder_found")
            assert found and all(f["verdict"] == "orphan" for f in found)
            assert any("spawn record" in str(f["reason"]) for f in found)
            new_pid = second.wait_for("sidecar_ready", timeout=30)["pid"]
            assert new_pid not in orphans
            wait_until(functools.partial(all_gone, orphans), 10.0, "the orphans to be gone")
            fresh = tree(new_pid)
            assert second.stop() == 0
        wait_until(functools.partial(all_gone, fresh), 10.0, "the new server to be gone")
        assert port_free(port)


IGNORES_TERM = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("idle", flush=True)
    while True:
        time.sleep(3600)
    """
)


def idle_sidecar(name: str, stop_timeout_s: float) -> dict[str, object]:
    """A sidecar without a port: only the sweep can reclaim what is left of it."""
    return {
        "name": name,
        "command": [PYTHON, "-c", IGNORES_TERM],
        "stop": {"timeout": stop_timeout_s},
    }


def test_two_unclean_generations_are_both_swept(tmp_path: Path) -> None:
    """Generation 1 leaves a1; generation 2, while its sweep still waits for a1 (which ignores
    SIGTERM), spawns b1 and dies too. The third sweeps both: the ledger keeps every generation."""
    state = tmp_path / "state"
    slow = write_config(tmp_path / "slow.toml", [idle_sidecar("idle", 60.0)])
    quick = write_config(tmp_path / "quick.toml", [idle_sidecar("idle", 0.5)])
    left: list[int] = []
    with cleanup(left):
        gen1 = Daemon(slow, state)
        left.append(gen1.wait_for("sidecar_spawned")["pid"])
        gen1.wait_for("child_output", line="idle")  # SIGTERM is ignored from now on
        wait_recorded(state, left[0])
        gen1.kill()
        gen2 = Daemon(slow, state)
        left.append(gen2.wait_for("sidecar_spawned")["pid"])
        gen2.wait_for("child_output", line="idle")
        wait_recorded(state, left[1])
        gen2.kill()
        assert not any(pid_gone(pid) for pid in left)
        with Daemon(quick, state) as gen3:
            killed = {gen3.wait_for("orphan_killed", count=n, timeout=30)["pid"] for n in (1, 2)}
            assert killed == set(left)
            wait_until(functools.partial(all_gone, left), 10.0, "both generations' leftovers")
            assert gen3.stop() == 0
    remaining = [p.read_text() for p in (state / "_spawns").glob("*.json")]
    assert not remaining, (left, remaining)  # all pruned


LEAVES_THE_SESSION = textwrap.dedent(
    """
    import os, sys, time
    pid = os.fork()
    if pid == 0:
        os.setsid()  # like a browser a dev server opens: its own session, the tags inherited
        os.write(1, b"escaped %d\\n" % os.getpid())  # one write: lines never interleave
        time.sleep(3600)
        os._exit(0)
    os.write(1, b"child %d\\n" % os.getpid())
    time.sleep(3600)
    """
)

# The same, but the process in between exits: the escaped one's chain of living parents no
# longer reaches our recorded child (it was adopted by the daemon, then by whoever is next).
LEAVES_AND_LOSES_ITS_PARENT = textwrap.dedent(
    """
    import os, sys, time
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            os.setsid()
            os.write(1, b"escaped %d\\n" % os.getpid())
            time.sleep(3600)
            os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
    os.write(1, b"child %d\\n" % os.getpid())
    time.sleep(3600)
    """
)


def escaped_pid(daemon: Daemon) -> int:
    line = daemon.wait_for(
        "child_output", where=lambda e: str(e.get("line", "")).startswith("escaped")
    )
    return int(str(line["line"]).split()[1])


def test_a_setsid_descendant_of_a_living_leftover_is_swept_with_it(tmp_path: Path) -> None:
    """Its own setsid does not hide it: its chain of living parents reaches our recorded child
    (issue 24: setsid'd members of a sidecar's tree were left behind)."""
    state = tmp_path / "state"
    sidecar: dict[str, object] = {"name": "app", "command": [PYTHON, "-c", LEAVES_THE_SESSION]}
    config = write_config(tmp_path / "supervisor.toml", [sidecar])
    left: list[int] = []
    with cleanup(left):
        first = Daemon(config, state)
        escaped = escaped_pid(first)
        child = first.wait_for("sidecar_spawned")["pid"]
        left += [child, escaped]
        wait_recorded(state, child)
        first.kill()
        with Daemon(config, state) as second:
            killed = {second.wait_for("orphan_killed", count=n, timeout=30)["pid"] for n in (1, 2)}
            assert killed == {child, escaped}
            left.append(escaped_pid(second))  # its new child's: cleaned up by `cleanup`
            assert second.stop() == 0
        assert pid_gone(child) and pid_gone(escaped)


def test_a_tagged_process_that_is_not_proven_ours_survives_the_sweep(tmp_path: Path) -> None:
    """It carries the tags of the gone daemon, but neither a spawn record nor a chain of living
    parents proves it ours (the process between it and our child exited): reported, untouched."""
    state = tmp_path / "state"
    sidecar: dict[str, object] = {
        "name": "app",
        "command": [PYTHON, "-c", LEAVES_AND_LOSES_ITS_PARENT],
    }
    config = write_config(tmp_path / "supervisor.toml", [sidecar])
    left: list[int] = []
    with cleanup(left):
        first = Daemon(config, state)
        escaped = escaped_pid(first)
        child = first.wait_for("sidecar_spawned")["pid"]
        left += [child, escaped]
        first.wait_for("child_output", where=lambda e: str(e.get("line", "")).startswith("child"))
        wait_recorded(state, child)
        first.kill()
        with Daemon(config, state) as second:
            assert second.wait_for("orphan_killed", timeout=30)["pid"] == child
            reported = second.wait_for("orphan_left", timeout=30)
            assert reported["pid"] == escaped
            left.append(escaped_pid(second))
            assert second.stop() == 0
        assert pid_gone(child)
        assert not pid_gone(escaped)  # not proven ours: untouched


def test_second_instance_reclaims_once_the_first_supervisor_dies(tmp_path: Path) -> None:
    """Two app instances, each with its own state dir: the second waits on the first's live
    sidecar, and when that supervisor dies it reclaims the orphan at once (it watches the owner,
    it does not wait for the listeners to change)."""
    port = free_port()
    config = write_config(tmp_path / "supervisor.toml", [demo_sidecar("web", port)])
    left: list[int] = []
    with cleanup(left):
        first = Daemon(config, tmp_path / "first")
        left.append(first.wait_for("sidecar_ready")["pid"])
        with Daemon(config, tmp_path / "second", "--non-interactive") as second:
            waiting = second.wait_for("sidecar_waiting")
            assert waiting["verdict"] == "live" and waiting["holder_pid"] == left[0]
            first.kill()
            noticed = second.wait_for("sidecar_wait_owner_exited", timeout=10)
            assert noticed["owner_pid"] == first.pid
            assert second.wait_for("orphan_killed", timeout=10)["pid"] == left[0]
            ready = second.wait_for("sidecar_ready", timeout=10)
            print(f"owner gone -> ready: {(stamp_ns(ready) - stamp_ns(noticed)) / 1e6:.0f} ms")
            assert second.stop() == 0
        assert pid_gone(left[0])


def sidecar_state(state: Path) -> str | None:
    try:
        (entry,) = read_json(state / "status.json")["sidecars"]
    except (OSError, ValueError):
        return None
    return str(entry["state"])


@pytest.mark.parametrize("kind", ["redis", "nginx", "retitle"])
def test_a_command_that_daemonizes_is_named_and_leaves_nothing(kind: str, tmp_path: Path) -> None:
    port = free_port()
    server = make_server(kind, port, tmp_path / "server", daemonize=True)
    # "auto": a cgroup where one can be used (root here), which sees a bind after the exit.
    config = write_config(tmp_path / "supervisor.toml", [server.sidecar("web")], "auto")
    with Daemon(config, tmp_path / "state") as daemon:
        event = daemon.wait_for("sidecar_daemonized", timeout=30)
        assert "daemon off" in event["reason"] and "--daemonize no" in event["reason"]
        holder = int(event["holder_pid"])
        wait_until(lambda: pid_gone(holder), 15.0, "the daemonized server to be stopped")
        wait_until(lambda: port_free(port), 15.0, "the port to be free")
        state = tmp_path / "state"
        wait_until(lambda: sidecar_state(state) == "failed", 15.0, "the sidecar to be failed")
        (entry,) = read_json(state / "status.json")["sidecars"]
        assert "daemonized" in entry["reason"]
        assert len(daemon.find("sidecar_spawned")) == 1  # no restart loop
        assert daemon.stop() == 0
    assert port_free(port)


def port_cli(port: int, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [PYTHON, "-m", "supervisor", "port", str(port), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 10, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_port_reads_the_ledgers_and_says_what_to_do(tmp_path: Path) -> None:
    """`supervisor port` sees what the reconcile sees: a retitled sidecar of a running daemon
    is live (and the command that stops it is named); once that daemon is gone it is an orphan
    that the next `supervisor run` of that state dir reclaims."""
    port = free_port()
    server = make_server("retitle", port, tmp_path / "server")
    config = write_config(tmp_path / "supervisor.toml", [server.sidecar("web")])
    state = tmp_path / "state"
    first = Daemon(config, state)
    left: list[int] = []
    with cleanup(left):
        left += tree(first.wait_for("sidecar_ready", timeout=30)["pid"])
        (live,) = port_cli(port)["holders"]  # the registry finds the running daemon
        assert live["verdict"] == "live" and live["sidecar"] == "web"
        assert live["owner_pid"] == first.pid and live["state_dir"] == str(state)
        assert f"supervisor stop web --state-dir {state}" in live["advice"]
        wait_recorded(state, left[0])
        first.kill()
        (orphan,) = port_cli(port, "--state-dir", str(state))["holders"]
        assert orphan["verdict"] == "orphan" and "spawn record" in orphan["reason"]
        assert f"supervisor run --state-dir {state}" in orphan["advice"]
        (foreign,) = port_cli(port)["holders"]  # without the ledger: nothing proves it ours
        assert foreign["verdict"] == "foreign" and "not ours" in foreign["advice"]
        with Daemon(config, state) as second:  # and the reclaim does what `port` said
            second.wait_for("orphan_killed", timeout=30)
            second.wait_for("sidecar_ready", timeout=30)
            assert second.stop() == 0
