"""A lookup that fails is an error, never "the port is free": provoked for real.

Every fd is used up under a low RLIMIT_NOFILE (no netlink socket, no /proc/net/tcp, no pipes for
lsof), in a fresh process so that no socket is cached. The preflight then logs
`reconcile_failed` (never `reconcile_port_free`) and proceeds to spawn; a waiting sidecar keeps
waiting.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from supervisor.system import net
from supervisor.system.net import fallbacks
from tests.support import PYTHON, ROOT, Holder, free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT and /proc semantics")

# Runs in a fresh interpreter: exhausts its fds inside the event loop (anyio needs some to run),
# runs the code under test, releases them and prints what was logged as JSON lines.
HARNESS = textwrap.dedent(
    """
    import json, sys
    import anyio, structlog
    from structlog.testing import capture_logs
    from supervisor import config
    from supervisor.system import net
    from supervisor.reconcile.decide import LaunchKind
    from supervisor.reconcile.preflight import Action, Context, Outcome, preflight
    from supervisor.sidecar.loop import wait_for_port
    from tests.helpers.nofds import no_fd_left

    mode, port = sys.argv[1], int(sys.argv[2])

    def ctx():
        return Context(our_pid=1, our_create_time=0.0, recorded_pid=lambda: None,
                       stdin_is_tty=False, consent_lock=anyio.Lock(), should_run=lambda: True)

    async def main():
        raw = {"sidecar": [{"name": "web", "command": ["true"], "port": port}]}
        sidecar = config.parse(raw).sidecars[0]
        log = structlog.get_logger()
        with capture_logs() as logs:
            if mode == "preflight":
                with no_fd_left():
                    launch = LaunchKind.RESTART
                    outcome = await preflight(sidecar, launch=launch, ctx=ctx(), log=log)
                print(json.dumps({"outcome": outcome.action.value, "reason": outcome.reason}))
            else:  # a sidecar waits on a held port while every lookup fails
                # Found by the test process: this one must open no netlink socket before.
                listeners = frozenset(net.Listener(**entry) for entry in json.loads(sys.argv[3]))
                outcome = Outcome(Action.WAIT, listeners=listeners)
                with no_fd_left():
                    with anyio.move_on_after(2.5) as scope:
                        await wait_for_port(port, outcome, log)
                print(json.dumps({"still_waiting": scope.cancelled_caught}))
        for entry in logs:
            print(json.dumps({k: str(v) for k, v in entry.items()}))

    anyio.run(main)
    """
)


def run_harness(mode: str, port: int) -> list[dict[str, Any]]:
    listeners = [dataclasses.asdict(lst) for lst in net.find_listeners(port)]
    result = subprocess.run(
        [PYTHON, "-c", HARNESS, mode, str(port), json.dumps(listeners)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_exhausted_fds_make_the_preflight_fail_not_call_the_port_free() -> None:
    port = free_port()
    with Holder(port):  # held: "free" would be a lie, and a launch would fail to bind
        outcome, *logs = run_harness("preflight", port)
    assert outcome["outcome"] == "launch" and outcome["reason"] == "reconcile failed"
    events = [entry["event"] for entry in logs]
    assert "reconcile_port_free" not in events
    (failed,) = [entry for entry in logs if entry["event"] == "reconcile_failed"]
    assert failed["log_level"] == "warning"
    assert "Too many open files" in failed["error"]
    assert "netlink" in failed["error"] and "lsof" in failed["error"]


def test_a_waiting_sidecar_keeps_waiting_while_lookups_fail() -> None:
    port = free_port()
    with Holder(port):
        state, *logs = run_harness("wait", port)
    assert state == {"still_waiting": True}
    failed = [entry for entry in logs if entry["event"] == "sidecar_wait_lookup_failed"]
    assert failed and "Too many open files" in failed[0]["error"]


def test_a_failing_lsof_is_an_error_not_an_empty_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real program on PATH named lsof that fails the way lsof does (exit 1 plus a message).
    broken = tmp_path / "lsof"
    broken.write_text("#!/bin/sh\necho 'lsof: status error on /proc: denied' >&2\nexit 1\n")
    broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(OSError, match="lsof exited 1: lsof: status error"):
        fallbacks.listeners_lsof(free_port())


def test_a_silent_lsof_exit_1_means_nothing_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = tmp_path / "lsof"
    silent.write_text("#!/bin/sh\nexit 1\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert fallbacks.listeners_lsof(free_port()) == ()
