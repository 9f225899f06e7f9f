"""Live instances: consent only at interactive launches; waiting instead of retry storms."""

from __future__ import annotations

import os
import pty
import select
import time
from pathlib import Path

import psutil
import pytest

from supervisor.evidence.tags import format_owner_tag
from tests.support import Daemon, Holder, demo_sidecar, free_port, render_config

MARKER = "live-instance-of-web"


def live_tags() -> dict[str, str]:
    """The tags of a live instance: sidecar web, started by a supervisor that still runs (this
    test process stands in for it). A holder with the marker alone is `unproven` (issue 24)."""
    me = psutil.Process()
    return {
        "SUPERVISOR_SIDECAR": "web",
        "SUPERVISOR_OWNER": format_owner_tag(me.pid, me.create_time()),
    }


def config_for(tmp_path: Path, port: int, **tables: object) -> Path:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([demo_sidecar("web", port, marker=MARKER, **tables)]))
    return config


def consent_command(tmp_path: Path, code: int, *, sleep_s: float = 0.0) -> list[str]:
    """A consent command that leaves proof it ran (a marker file), then answers."""
    proof = tmp_path / "consent-ran"
    return ["sh", "-c", f'echo "$SUPERVISOR_HOLDER_PID" >> {proof}; sleep {sleep_s}; exit {code}']


def test_consent_granted_at_boot_kills_the_live_holder(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(
        tmp_path,
        port,
        reclaim={"consent": "command", "consent_command": consent_command(tmp_path, 0)},
    )
    with (
        Holder(port, "127.0.0.1", "-", MARKER, env=live_tags()) as holder,
        Daemon(config, tmp_path / "state") as d,
    ):
        assert d.wait_for("reconcile_holder_found")["verdict"] == "live"
        d.wait_for("consent_requested", pid=holder.pid)
        d.wait_for("consent_granted", pid=holder.pid)
        d.wait_for("live_holder_killed", pid=holder.pid)
        d.wait_for("sidecar_ready")
        assert not holder.alive()
        assert (tmp_path / "consent-ran").read_text().split() == [str(holder.pid)]
        assert d.stop() == 0


def test_consent_declined_or_timed_out_waits_then_starts_without_asking_again(
    tmp_path: Path,
) -> None:
    for code, sleep_s, name in ((1, 0.0, "declined"), (0, 5.0, "timeout")):
        case = tmp_path / name
        case.mkdir()
        port = free_port()
        reclaim = {
            "consent": "command",
            "consent_command": consent_command(case, code, sleep_s=sleep_s),
            "consent_timeout": 0.5,
        }
        config = config_for(case, port, reclaim=reclaim)
        with (
            Holder(port, "127.0.0.1", "-", MARKER, env=live_tags()) as holder,
            Daemon(config, case / "state") as d,
        ):
            declined = d.wait_for("consent_declined", pid=holder.pid)
            if name == "timeout":
                assert "time" in str(declined["detail"])
            waiting = d.wait_for("sidecar_waiting")
            assert waiting["verdict"] == "live" and waiting["holder_pid"] == holder.pid
            assert holder.untouched()
            holder.stop()
            d.wait_for("sidecar_ready")
            assert len(d.find("consent_requested")) == 1
            assert d.find("sidecar_spawned")[0]["interactive"] is False
            assert d.stop() == 0


def test_crash_restart_never_asks_for_consent(tmp_path: Path) -> None:
    port = free_port()
    reclaim = {"consent": "command", "consent_command": consent_command(tmp_path, 0)}
    config = config_for(
        tmp_path,
        port,
        reclaim=reclaim,
        restart={"base_delay": 1.5, "max_delay": 1.5},
    )
    config.write_text(
        config.read_text().replace(
            '"--port", "' + str(port) + '"]',
            '"--port", "' + str(port) + '", "--crash-after", "0.5"]',
        )
    )
    with Daemon(config, tmp_path / "state") as d:
        d.wait_for("sidecar_ready")
        d.wait_for("sidecar_exited")
        d.wait_for("restart_scheduled")
        # During the backoff, a live instance of our program takes the port.
        with Holder(port, "127.0.0.1", "-", MARKER, env=live_tags()) as holder:
            waiting = d.wait_for("sidecar_waiting", timeout=10)
            assert waiting["verdict"] == "live" and waiting["holder_pid"] == holder.pid
            assert not (tmp_path / "consent-ran").exists()
            assert not d.find("consent_requested")
            assert holder.untouched()
            relaunch = d.find("sidecar_spawned")
            assert len(relaunch) == 1  # only the first, interactive launch spawned
        assert d.stop() == 0


def test_non_interactive_flag_never_asks(tmp_path: Path) -> None:
    port = free_port()
    reclaim = {"consent": "command", "consent_command": consent_command(tmp_path, 0)}
    config = config_for(tmp_path, port, reclaim=reclaim)
    with (
        Holder(port, "127.0.0.1", "-", MARKER, env=live_tags()) as holder,
        Daemon(config, tmp_path / "state", "--non-interactive") as d,
    ):
        waiting = d.wait_for("sidecar_waiting")
        assert waiting["verdict"] == "live"
        d.dump_status()
        assert not d.find("consent_requested")
        assert not (tmp_path / "consent-ran").exists()
        assert holder.untouched()
        assert d.stop() == 0


def test_waiting_uses_no_restart_budget(tmp_path: Path) -> None:
    port = free_port()
    config = config_for(tmp_path, port, restart={"max_attempts": 1})
    with Holder(port) as holder, Daemon(config, tmp_path / "state") as d:
        d.wait_for("sidecar_waiting")
        started = time.monotonic()
        d.wait_for("sidecar_wait_polled", polls=10, timeout=20)
        assert time.monotonic() - started >= 9.0  # polls are at most once a second
        holder.stop()
        d.wait_for("sidecar_ready")
        (entry,) = d.dump_status()["status"]["sidecars"]
        assert entry["attempts"] == 0 and entry["restarts"] == 0 and entry["state"] == "ready"
        assert d.stop() == 0


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """Read a pty master until `needle` shows up (bounded)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} on the terminal; got {seen!r}"
        readable, _, _ = select.select([fd], [], [], remaining)
        if readable:
            seen += os.read(fd, 4096)
    return seen


@pytest.mark.parametrize(("answer", "granted"), [(b"y\n", True), (b"n\n", False)])
def test_daemon_on_a_terminal_asks_there(tmp_path: Path, answer: bytes, granted: bool) -> None:
    port = free_port()
    config = config_for(tmp_path, port)  # consent = "auto": the terminal, since stdin is one
    master, slave = pty.openpty()
    try:
        with (
            Holder(port, "127.0.0.1", "-", MARKER, env=live_tags()) as holder,
            Daemon(config, tmp_path / "state", stdin=slave) as d,
        ):
            prompt = _read_until(master, b"[y/N]", 15)
            assert str(holder.pid).encode() in prompt
            os.write(master, answer)
            if granted:
                d.wait_for("consent_granted", pid=holder.pid)
                d.wait_for("live_holder_killed", pid=holder.pid)
                d.wait_for("sidecar_ready")
                assert not holder.alive()
            else:
                d.wait_for("consent_declined", pid=holder.pid)
                d.wait_for("sidecar_waiting")
                assert holder.untouched()
            assert d.stop() == 0
    finally:
        os.close(master)
        os.close(slave)


def test_waiting_sidecar_starts_when_its_holder_exits_without_waiting_for_a_poll(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = config_for(tmp_path, port)
    with Holder(port) as holder, Daemon(config, tmp_path / "state") as d:
        d.wait_for("sidecar_waiting")
        d.wait_for("sidecar_wait_polled", polls=1)  # the next poll is a second away
        holder.stop()
        d.wait_for("sidecar_spawned")
        # Woken by the holder's exit (a pidfd), not by the next once-a-second poll.
        assert not d.find("sidecar_wait_polled", polls=2)
        d.wait_for("sidecar_ready")
        assert d.stop() == 0
