"""The control socket as a client sees it: raw JSON lines on `control.sock` against a real daemon
with two or three demo sidecars; what one request does, the others keep their pids.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import (
    PYTHON,
    ControlClient,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    pid_gone,
    read_json,
    render_config,
    sidecar_pids,
    wait_until,
)

HTTP = {"probe": "http", "path": "/health"}


def three(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    ports = {"web": free_port(), "api": free_port(), "worker": free_port()}
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("web", ports["web"], ready=HTTP),
                demo_sidecar("api", ports["api"]),
                demo_sidecar("worker", ports["worker"]),
            ]
        )
    )
    return config, ports


def started(daemon: Daemon, *names: str) -> dict[str, int]:
    """Handshake: every named sidecar ready and the socket listening; name -> pid."""
    pids = {name: int(daemon.wait_for("sidecar_ready", sidecar=name)["pid"]) for name in names}
    daemon.wait_for("control_listening")
    return pids


# -- url ---------------------------------------------------------------------------------------


def test_url_is_in_sidecar_ready_status_json_and_the_status_reply(tmp_path: Path) -> None:
    web, raw, v6 = free_port(), free_port(), free_port(ipv6=True)
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("web", web, ready=HTTP),
                demo_sidecar("raw", raw),
                {
                    **demo_sidecar("six", v6, "--host", "::1"),
                    "host": "::1",
                },
                {"name": "noport", "command": [PYTHON, "-c", "import time; time.sleep(60)"]},
            ]
        )
    )
    expected = {
        "web": f"http://127.0.0.1:{web}/health",
        "raw": f"tcp://127.0.0.1:{raw}",
        "six": f"tcp://[::1]:{v6}",
        "noport": None,
    }
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        for name, url in expected.items():
            assert daemon.wait_for("sidecar_ready", sidecar=name)["url"] == url
        daemon.wait_for("control_listening")
        daemon.dump_status()
        on_disk = {s["name"]: s["url"] for s in read_json(state / "status.json")["sidecars"]}
        assert on_disk == expected
        with ControlClient(state) as client:
            reply = client.request("status")
        assert reply["ok"] is True and reply["id"] == 1
        assert {s["name"]: s["url"] for s in reply["result"]["sidecars"]} == expected
        assert reply["result"]["supervisor"]["pid"] == daemon.pid
        assert reply["result"]["supervisor"]["state_dir"] == str(state)
        assert daemon.stop() == 0


# -- actions -----------------------------------------------------------------------------------


def test_restart_one_sidecar_leaves_the_others_alone_and_streams_its_events(
    tmp_path: Path,
) -> None:
    config, ports = three(tmp_path)
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pids = started(daemon, "web", "api", "worker")
        with ControlClient(state) as watcher, ControlClient(state) as actor:
            subscribed = watcher.request("subscribe", ["web"])
            assert subscribed["ok"] and [s["name"] for s in subscribed["result"]["sidecars"]] == [
                "web"
            ]
            reply = actor.request("restart", ["web"])
            assert reply["ok"], reply
            (result,) = reply["result"]
            assert result["name"] == "web" and result["action"] == "restarted"
            assert result["was"] == "ready"
            kinds: list[str] = []
            while not kinds or kinds[-1] != "ready":
                event = watcher.message()
                assert event is not None and event.get("sidecar") == "web", event
                kinds.append(event["event"])
                last = event
            assert kinds == ["stopping", "stopped", "starting", "spawned", "ready"]
            assert last["url"] == f"http://127.0.0.1:{ports['web']}/health"
            assert last["pid"] != pids["web"] and pid_gone(pids["web"])
            after = sidecar_pids(actor)
        assert after["api"] == pids["api"] and after["worker"] == pids["worker"]
        assert after["web"] == last["pid"]
        # The launch was an interactive one, like SIGUSR1's.
        spawned = daemon.find("sidecar_spawned", sidecar="web")
        assert spawned[-1]["interactive"] is True and spawned[-1]["attempt"] == 0
        assert len(daemon.find("sidecar_spawned", sidecar="api")) == 1
        assert daemon.stop() == 0


def test_stop_leaves_it_stopped_and_start_brings_it_back(tmp_path: Path) -> None:
    config, _ = three(tmp_path)
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pids = started(daemon, "web", "api", "worker")
        with ControlClient(state) as client:
            reply = client.request("stop", ["api", "worker"])
            assert reply["ok"], reply
            assert [(r["name"], r["action"], r["state"]) for r in reply["result"]] == [
                ("api", "stopped", "stopped"),
                ("worker", "stopped", "stopped"),
            ]
            # The reply comes once they are gone.
            assert pid_gone(pids["api"]) and pid_gone(pids["worker"])
            assert not (state / "api" / "sidecar.pid").exists()
            again = client.request("stop", ["api"])
            assert again["result"][0]["action"] == "unchanged"
            # Still configured, still stopped: a status dump (a later handshake) says so.
            states = {s["name"]: s["state"] for s in daemon.dump_status()["status"]["sidecars"]}
            assert states == {"web": "ready", "api": "stopped", "worker": "stopped"}
            assert sidecar_pids(client)["web"] == pids["web"]

            client.request("subscribe", ["api"])
            reply = client.request("start", ["api", "web"])
            assert [(r["name"], r["action"]) for r in reply["result"]] == [
                ("api", "started"),
                ("web", "unchanged"),
            ]
            ready = client.wait_event("ready", sidecar="api")
            assert ready["pid"] not in (None, pids["api"])
            now = sidecar_pids(client)
        assert now["web"] == pids["web"] and now["worker"] is None
        assert daemon.stop() == 0


def test_start_of_a_failed_sidecar_gets_a_fresh_budget(tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    port = free_port()
    script = textwrap.dedent(
        f"""
        import os, runpy, sys
        print("cannot start: the flag file is missing", flush=True)
        if not os.path.exists({str(flag)!r}):
            raise SystemExit(3)
        sys.argv = ["demo", "--port", "{port}"]
        runpy.run_module("supervisor.demo", run_name="__main__")
        """
    )
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                {
                    "name": "flaky",
                    "command": [PYTHON, "-c", script],
                    "port": port,
                    "restart": {"max_attempts": 1, "base_delay": 0.01},
                },
                demo_sidecar("steady", free_port()),
            ]
        )
    )
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        steady = started(daemon, "steady")["steady"]
        daemon.wait_for("restart_budget_exhausted", sidecar="flaky")
        with ControlClient(state) as client:
            (flaky,) = client.request("status", ["flaky"])["result"]["sidecars"]
            assert flaky["state"] == "failed" and flaky["attempts"] == 1
            flag.touch()
            reply = client.request("start", ["flaky"])
            assert reply["result"][0]["action"] == "started"
            assert reply["result"][0]["was"] == "failed"
        daemon.wait_for("sidecar_ready", sidecar="flaky")
        assert daemon.find("sidecar_spawned", sidecar="flaky")[-1]["attempt"] == 0
        with ControlClient(state) as client:
            assert sidecar_pids(client)["steady"] == steady
        assert daemon.stop() == 0


def test_a_client_that_vanishes_mid_restart_does_not_leave_the_sidecar_stopped(
    tmp_path: Path,
) -> None:
    config = tmp_path / "supervisor.toml"
    # A child that ignores SIGTERM: its stop takes stop.timeout, long enough to hang up during it.
    config.write_text(
        render_config([demo_sidecar("slow", free_port(), "--ignore-sigterm", stop={"timeout": 1})])
    )
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        old = started(daemon, "slow")["slow"]
        client = ControlClient(state)
        client.send({"id": 1, "cmd": "restart", "names": ["slow"]})
        daemon.wait_for("sidecar_stopping", sidecar="slow")
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        client.close()  # an RST, right in the middle
        new = daemon.wait_for("sidecar_ready", sidecar="slow", count=2)["pid"]
        assert new != old and pid_gone(old)
        assert daemon.stop() == 0


# -- bad requests change nothing -----------------------------------------------------------------


BAD = [
    (b"not json\n", "bad_request"),
    (b"[1, 2]\n", "bad_request"),
    (b'{"cmd": 5}\n', "bad_request"),
    (b'{"id": 1}\n', "bad_request"),
    (b'{"id": {"x": 1}, "cmd": "status"}\n', "bad_request"),
    (b'{"id": 1, "cmd": "status", "nmaes": ["web"]}\n', "bad_request"),
    (b'{"id": 1, "cmd": "restart", "names": "web"}\n', "bad_request"),
    (b'{"id": 1, "cmd": "restart", "names": [1]}\n', "bad_request"),
    (b'{"id": 1, "cmd": "restart"}\n', "bad_request"),
    (b'{"id": 1, "cmd": "restart", "names": []}\n', "bad_request"),
    (b'{"id": 1, "cmd": "reboot", "names": ["web"]}\n', "unknown_command"),
    (b'{"id": 1, "cmd": "stop", "names": ["web", "nope"]}\n', "unknown_sidecar"),
    (b'{"id": 1, "cmd": "subscribe", "names": ["nope"]}\n', "unknown_sidecar"),
    (b'{"id": 1, "cmd": "status", "names": ["nope"]}\n', "unknown_sidecar"),
    (b"\xff\xfe\x00garbage\n", "bad_request"),
    (b'{"id": 1, "cmd": "status", "names": ' + b"[" * 100_000 + b"\n", "too_large"),
]


def test_malformed_and_unknown_requests_get_an_error_reply_and_change_nothing(
    tmp_path: Path,
) -> None:
    config, _ = three(tmp_path)
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pids = started(daemon, "web", "api", "worker")
        with ControlClient(state) as client:
            for raw, code in BAD:
                client.send_raw(raw)
                reply = client.message()
                assert reply is not None and reply["ok"] is False, raw[:80]
                assert reply["error"]["code"] == code, (raw[:80], reply)
                assert reply["error"]["message"]
            unknown = json.loads(BAD[11][0])
            client.send(unknown)
            error = client.message()
            assert error is not None and error["error"]["names"] == ["nope"]
            assert error["error"]["known"] == ["web", "api", "worker"]
            # The same connection still works, and nothing was touched.
            assert sidecar_pids(client) == pids
        assert all(len(daemon.find("sidecar_spawned", sidecar=n)) == 1 for n in pids)
        assert daemon.stop() == 0


def test_an_oversized_request_is_refused_and_the_connection_goes_on(tmp_path: Path) -> None:
    config, _ = three(tmp_path)
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pids = started(daemon, "web", "api", "worker")
        with ControlClient(state) as client:
            # 1 MiB without a newline, in pieces: one too_large reply, the rest skipped ...
            piece = b'{"cmd": "restart", "names": ["web"]} ' * 1000
            for _ in range((1 << 20) // len(piece) + 1):
                client.send_raw(piece)
            client.send_raw(b"\n")
            reply = client.message()
            assert reply is not None and reply["error"]["code"] == "too_large"
            # ... and the next request on the same connection is answered normally.
            assert sidecar_pids(client) == pids
        assert all(len(daemon.find("sidecar_spawned", sidecar=n)) == 1 for n in pids)
        assert daemon.stop() == 0


def test_a_client_that_does_not_read_is_dropped_and_others_are_served(tmp_path: Path) -> None:
    config, _ = three(tmp_path)
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pids = started(daemon, "web", "api", "worker")
        hog = ControlClient(state)
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.request("subscribe")
        # Pipelined status requests whose replies it never reads: ~1 KiB each, far past the
        # outgoing queue's bound.
        request = b'{"id": 1, "cmd": "status"}\n'
        hog.sock.settimeout(30)
        sent = 0
        try:
            while sent < 8 << 20:
                hog.sock.sendall(request * 512)
                sent += len(request) * 512
                if daemon.find("control_client_dropped"):
                    break
        except OSError:
            pass  # dropped while we were still writing
        dropped = daemon.wait_for("control_client_dropped")
        assert "not reading" in dropped["reason"]
        with ControlClient(state) as other:
            assert sidecar_pids(other) == pids
            reply = other.request("restart", ["worker"])
            assert reply["ok"]
        daemon.wait_for("sidecar_ready", sidecar="worker", count=2)
        # The hog reads what was queued before the drop, then the end of the connection.
        hog.sock.settimeout(15)
        try:
            while hog.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            pass  # it closed with our unread requests still queued: a reset, not an EOF
        hog.close()
        assert daemon.stop() == 0


def test_connections_are_bounded(tmp_path: Path) -> None:
    from supervisor.control.server import MAX_CLIENTS

    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", free_port())]))
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pid = started(daemon, "web")["web"]
        clients = []
        try:
            for _ in range(MAX_CLIENTS):
                client = ControlClient(state)
                clients.append(client)
                client.request("subscribe")  # handshake: it is admitted
            with ControlClient(state) as extra:
                refused = extra.message()
                assert refused is not None and refused["error"]["code"] == "busy"
                assert extra.message() is None  # and closed
            daemon.wait_for("control_connections_full", limit=MAX_CLIENTS)
        finally:
            for client in clients:
                client.close()

        # Once they are gone, a new client is admitted again.
        def admitted() -> bool:
            with ControlClient(state) as client:
                client.send({"id": 1, "cmd": "status"})
                reply = client.message()
                assert reply is not None
                if not reply["ok"]:
                    assert reply["error"]["code"] == "busy"
                    return False
                return bool(reply["result"]["supervisor"]["clients"] == 1)

        wait_until(admitted, 15, "the closed connections to be released")
        with ControlClient(state) as client:
            assert sidecar_pids(client)["web"] == pid
        assert daemon.stop() == 0


# -- events --------------------------------------------------------------------------------------


def test_events_carry_holder_backoff_due_time_and_last_output(tmp_path: Path) -> None:
    held, crashy = free_port(), free_port()
    crash = textwrap.dedent(
        """
        import sys
        for i in range(30):
            print(f"line {i}", flush=True)
        print("fatal: no database", flush=True)
        raise SystemExit(3)
        """
    )
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("blocked", held),
                {
                    "name": "crashy",
                    "command": [PYTHON, "-c", crash],
                    "port": crashy,
                    "restart": {"max_attempts": 2, "base_delay": 0.3, "max_delay": 1},
                },
            ]
        )
    )
    state = tmp_path / "state"
    with Holder(held) as holder, Daemon(config, state) as daemon:
        daemon.wait_for("control_listening")
        daemon.wait_for("sidecar_waiting", sidecar="blocked")
        daemon.wait_for("restart_budget_exhausted", sidecar="crashy")
        with ControlClient(state) as client:
            assert client.events == [] and client.request("subscribe")["ok"]
            # Both at rest (waiting, failed): launched again, every event of theirs is new.
            assert client.request("start", ["blocked", "crashy"])["ok"]
            waiting = client.wait_event("waiting", sidecar="blocked")
            assert waiting["holder_pid"] == holder.pid
            assert waiting["verdict"] == "foreign"
            assert waiting["port"] == held
            backoff = client.wait_event("backoff", sidecar="crashy")
            assert backoff["delay_s"] == 0.3 and backoff["attempt"] == 1
            assert backoff["next_attempt_at"] > backoff["at"]  # ISO 8601 compares as text
            assert backoff["max_attempts"] == 2
            failed = client.wait_event("failed", sidecar="crashy")
            assert "gave up" in failed["reason"]
            assert failed["last_exit"]["code"] == 3
            assert failed["output"][-1] == "fatal: no database"
            assert failed["output"][-2] == "line 29"
            assert len(failed["output"]) == 20
        assert holder.untouched()
        # Also through the status request: the waiting one.
        with ControlClient(state) as client:
            (blocked,) = client.request("status", ["blocked"])["result"]["sidecars"]
            assert blocked["state"] == "waiting"
        assert daemon.stop() == 0


def test_subscribers_see_the_shutdown_then_the_end_of_the_stream(tmp_path: Path) -> None:
    config, _ = three(tmp_path)
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        started(daemon, "web", "api", "worker")
        with ControlClient(state) as client:
            client.request("subscribe")
            daemon.signal(signal.SIGTERM)
            stopping = client.wait_event("daemon_stopping")
            assert stopping["reason"] == "SIGTERM" and stopping["sidecar"] is None
            stopped = set()
            while True:
                event = client.message()
                if event is None:
                    break
                if event["event"] == "stopped":
                    stopped.add(event["sidecar"])
            assert stopped == {"web", "api", "worker"}
        assert daemon.proc.wait(15) == 0
    assert not (state / "control.sock").exists()


def test_start_during_shutdown_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("slow", free_port(), "--ignore-sigterm", stop={"timeout": 3}),
                demo_sidecar("web", free_port()),
            ]
        )
    )
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        started(daemon, "slow", "web")
        with ControlClient(state) as client:
            client.request("subscribe", ["web"])
            daemon.signal(signal.SIGTERM)
            client.wait_event("stopped", sidecar="web")  # the shutdown is under way
            reply = client.request("start", ["web"])
            assert reply["ok"] is False and reply["error"]["code"] == "shutting_down"
            status = client.request("status")["result"]
            assert status["supervisor"]["shutting_down"] is True
        assert daemon.proc.wait(15) == 0
        assert len(daemon.find("sidecar_spawned", sidecar="web")) == 1


# -- the socket itself ---------------------------------------------------------------------------


def test_socket_is_0600_replaces_a_stale_one_and_works_under_a_long_state_dir(
    tmp_path: Path,
) -> None:
    # Longer than an AF_UNIX path may be (108 bytes): bind and connect go through the dir fd.
    state = tmp_path / ("x" * 60) / ("y" * 60)
    assert len(str(state / "control.sock")) > 108
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", free_port())]))
    with Daemon(config, state) as first:
        pid = started(first, "web")["web"]
        info = os.lstat(state / "control.sock")
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
        first.kill()  # unclean: the socket file stays behind
    assert stat.S_ISSOCK(os.lstat(state / "control.sock").st_mode)
    with Daemon(config, state) as second:
        if second.wait_for("daemon_started")["isolation"] == "cgroup":  # the first one's child
            second.wait_for("cgroup_leftovers_killed", sidecar="web")
        else:
            second.wait_for("orphan_killed", sidecar="web", pid=pid)
        second.wait_for("sidecar_ready", sidecar="web")
        second.wait_for("control_listening")
        with ControlClient(state) as client:
            reply = client.request("status")
            assert reply["result"]["supervisor"]["pid"] == second.pid
        assert second.stop() == 0
    assert not (state / "control.sock").exists()


NOBODY_CLIENT = textwrap.dedent(
    """
    import json, os, socket, sys
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(sys.argv[1])
    try:
        sock.sendall(b'{"id": 1, "cmd": "stop", "names": ["web"]}\\n')
    except OSError:  # refused and closed already: the refusal is waiting to be read
        pass
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our request unread: the reply came first
            break
        if not chunk:
            break
        data += chunk
    print(json.dumps({"uid": os.getuid(), "reply": data.decode()}))
    """
)


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as nobody")
@pytest.mark.skipif(sys.platform != "linux" or not shutil.which("setpriv"), reason="setpriv")
def test_a_peer_of_another_uid_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", free_port())]))
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pid = started(daemon, "web")["web"]
        # nobody, with CAP_DAC_OVERRIDE so that the 0700 dir and the 0600 socket let it reach
        # connect(): only the peer-credential check stands in its way.
        result = subprocess.run(
            [
                "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                "--inh-caps=+dac_override", "--ambient-caps=+dac_override",
                PYTHON, "-c", NOBODY_CLIENT, str(state / "control.sock"),
            ],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["uid"] != 0
        (reply,) = [json.loads(line) for line in answer["reply"].splitlines()]
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
        refused = daemon.wait_for("control_peer_refused")
        assert refused["uid"] == answer["uid"]
        with ControlClient(state) as client:
            assert sidecar_pids(client)["web"] == pid
        assert not daemon.find("control_request", cmd="stop")
        assert daemon.stop() == 0
