"""The preflight never raises into the launch path: an OS error becomes `reconcile_failed`."""

from __future__ import annotations

import errno
from pathlib import Path

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

from supervisor import config, net
from supervisor.reconcile.preflight import Action, Context, preflight
from tests.support import free_port


def _sidecar(port: int) -> config.SidecarConfig:
    raw = {"sidecar": [{"name": "web", "command": ["true"], "port": port}]}
    return config.parse(raw).sidecars[0]


@pytest.mark.anyio
async def test_an_os_error_in_the_lookup_is_logged_and_the_launch_proceeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(port: int) -> tuple[net.Listener, ...]:
        # The one injected fault: no fd left for the netlink socket, which nothing else provokes.
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(net, "find_listeners", exhausted)
    ctx = Context(
        our_pid=1,
        our_create_time=0.0,
        recorded_pid=lambda: None,
        stdin_is_tty=False,
        consent_lock=anyio.Lock(),
        should_run=lambda: True,
    )
    with capture_logs() as logs:
        outcome = await preflight(
            _sidecar(free_port()), interactive=True, ctx=ctx, log=structlog.get_logger()
        )
    assert outcome.action is Action.LAUNCH
    (failed,) = [entry for entry in logs if entry["event"] == "reconcile_failed"]
    assert failed["log_level"] == "warning"
    assert "Too many open files" in failed["error"]
