"""Consent providers with real processes: consent commands, and the tty prompt through a pty."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import psutil
import pytest

from supervisor.config import ConsentMode, ReclaimConfig
from supervisor.reconcile import consent
from supervisor.reconcile.consent import ConsentRequest, Provider
from tests.support import ROOT

STARTED_AT = 1_700_000_000.0
REQUEST = ConsentRequest(
    sidecar="agent-monitor",
    port=47821,
    pid=4242,
    user="alice",
    command="node server/index.js --title 'a b' \"$HOME\"",
    started_at=STARTED_AT,
)


def command_reclaim(*argv: str, timeout_s: float = 10.0) -> ReclaimConfig:
    return ReclaimConfig(
        consent=ConsentMode.COMMAND, consent_command=argv, consent_timeout_s=timeout_s
    )


def wait_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """True once `pid` has exited (gone, or a zombie waiting for its reaper)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


# --- choose_provider ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "stdin_is_tty", "has_command", "expected"),
    [
        (ConsentMode.AUTO, True, True, Provider.TTY),
        (ConsentMode.AUTO, True, False, Provider.TTY),
        (ConsentMode.AUTO, False, True, Provider.COMMAND),
        (ConsentMode.AUTO, False, False, Provider.DENY),
        (ConsentMode.TTY, True, True, Provider.TTY),
        (ConsentMode.TTY, False, True, Provider.TTY),
        (ConsentMode.TTY, False, False, Provider.TTY),
        (ConsentMode.COMMAND, True, True, Provider.COMMAND),
        (ConsentMode.COMMAND, False, True, Provider.COMMAND),
        (ConsentMode.DENY, True, True, Provider.DENY),
        (ConsentMode.DENY, False, True, Provider.DENY),
        (ConsentMode.DENY, False, False, Provider.DENY),
    ],
    ids=lambda v: str(v).lower() if isinstance(v, bool) else str(v),
)
def test_choose_provider(
    mode: ConsentMode, stdin_is_tty: bool, has_command: bool, expected: Provider
) -> None:
    reclaim = ReclaimConfig(consent=mode, consent_command=("true",) if has_command else ())
    assert consent.choose_provider(reclaim, stdin_is_tty=stdin_is_tty) is expected


@pytest.mark.parametrize(
    ("mode", "stdin_is_tty", "expected"),
    [
        (ConsentMode.AUTO, True, Provider.TTY),
        (ConsentMode.AUTO, False, Provider.DENY),  # never the command for a marker-only holder
        (ConsentMode.TTY, False, Provider.TTY),
        (ConsentMode.COMMAND, False, Provider.COMMAND),  # the user said the command judges
        (ConsentMode.DENY, True, Provider.DENY),
    ],
    ids=lambda v: str(v).lower() if isinstance(v, bool) else str(v),
)
def test_choose_provider_for_an_unproven_holder(
    mode: ConsentMode, stdin_is_tty: bool, expected: Provider
) -> None:
    reclaim = ReclaimConfig(consent=mode, consent_command=("true",))
    chosen = consent.choose_provider(reclaim, stdin_is_tty=stdin_is_tty, unproven=True)
    assert chosen is expected


@pytest.mark.anyio
async def test_auto_never_runs_the_command_for_an_unproven_holder(tmp_path: Path) -> None:
    proof = tmp_path / "ran"
    reclaim = ReclaimConfig(consent_command=("sh", "-c", f"touch {proof}"))
    request = dataclasses.replace(REQUEST, unproven=True)
    result = await consent.ask(reclaim, request, stdin_is_tty=False)
    assert not result.granted and "matches the marker only" in result.detail
    assert not proof.exists()


# --- command provider --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_command_exit_0_grants() -> None:
    result = await consent.ask(command_reclaim("sh", "-c", "exit 0"), REQUEST, stdin_is_tty=False)
    assert result == consent.ConsentResult(True, Provider.COMMAND, "command exited 0")


@pytest.mark.anyio
async def test_command_exit_1_declines() -> None:
    result = await consent.ask(command_reclaim("sh", "-c", "exit 1"), REQUEST, stdin_is_tty=False)
    assert result == consent.ConsentResult(False, Provider.COMMAND, "command exited 1")


@pytest.mark.anyio
async def test_command_killed_by_a_signal_declines() -> None:
    reclaim = command_reclaim("sh", "-c", "kill -KILL $$")
    result = await consent.ask(reclaim, REQUEST, stdin_is_tty=False)
    assert not result.granted
    assert result.detail == "command killed by SIGKILL"


@pytest.mark.anyio
async def test_command_past_timeout_declines_and_leaves_no_process(tmp_path: Path) -> None:
    leader_file, grandchild_file = tmp_path / "leader", tmp_path / "grandchild"
    script = 'sleep 30 & echo $! > "$2"; echo $$ > "$1"; wait'
    reclaim = command_reclaim(
        "sh", "-c", script, "sh", str(leader_file), str(grandchild_file), timeout_s=0.5
    )
    started = time.monotonic()
    result = await consent.ask(reclaim, REQUEST, stdin_is_tty=False)
    elapsed_s = time.monotonic() - started

    assert not result.granted
    assert result.provider is Provider.COMMAND
    assert result.detail == "timed out after 0.5s"
    assert elapsed_s >= 0.5  # the command had its whole consent_timeout
    # Both files exist: the script wrote them long before the 0.5 s ran out.
    for pid in (read_pid(leader_file), read_pid(grandchild_file)):
        assert wait_gone(pid), f"pid {pid} survived the consent timeout"


@pytest.mark.anyio
async def test_command_of_a_grant_leaves_no_background_process(tmp_path: Path) -> None:
    grandchild_file = tmp_path / "grandchild"
    reclaim = command_reclaim(
        "sh", "-c", 'sleep 30 & echo $! > "$1"; exit 0', "sh", str(grandchild_file)
    )
    result = await consent.ask(reclaim, REQUEST, stdin_is_tty=False)
    assert result.granted
    assert wait_gone(read_pid(grandchild_file))


@pytest.mark.anyio
async def test_cancelling_ask_kills_the_command(tmp_path: Path) -> None:
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    reclaim = command_reclaim("sh", "-c", 'echo $$ > "$1"; exec sleep 30', "sh", str(fifo))
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consent.ask, reclaim, REQUEST)
                line = b""
                while not line.endswith(b"\n"):  # handshake: the command is running
                    await anyio.wait_readable(reader)
                    line += os.read(reader, 64)
                tg.cancel_scope.cancel()
    finally:
        os.close(reader)
    assert wait_gone(int(line))


@pytest.mark.anyio
async def test_missing_command_declines_with_clear_detail() -> None:
    reclaim = command_reclaim("/nonexistent/consent-dialog", "--ask")
    result = await consent.ask(reclaim, REQUEST, stdin_is_tty=False)
    assert result == consent.ConsentResult(
        False, Provider.COMMAND, "command not found: /nonexistent/consent-dialog"
    )


@pytest.mark.anyio
async def test_command_that_is_not_executable_declines(tmp_path: Path) -> None:
    # No execute bit at all: execve refuses even for root.
    script = tmp_path / "dialog"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o600)
    result = await consent.ask(command_reclaim(str(script)), REQUEST, stdin_is_tty=False)
    assert not result.granted
    assert result.detail == f"command not executable: {script}"


@pytest.mark.anyio
async def test_command_gets_the_holder_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env.json"
    code = textwrap.dedent(
        """
        import json, os, sys
        facts = {k: v for k, v in os.environ.items() if k.startswith("SUPERVISOR_")}
        facts["has_path"] = "PATH" in os.environ
        facts["stdin_is_devnull"] = os.fstat(0).st_rdev == os.stat("/dev/null").st_rdev
        facts["own_session"] = os.getsid(0) == os.getpid()
        with open(sys.argv[1], "w") as f:
            json.dump(facts, f)
        """
    )
    result = await consent.ask(
        command_reclaim(sys.executable, "-c", code, str(out)), REQUEST, stdin_is_tty=False
    )
    assert result.granted, result.detail
    facts = json.loads(out.read_text())
    assert facts.pop("has_path") is True
    assert facts.pop("stdin_is_devnull") is True
    assert facts.pop("own_session") is True
    facts.pop("SUPERVISOR_CONFIG", None)  # inherited from whoever runs the tests
    facts.pop("SUPERVISOR_STATE_DIR", None)
    facts.pop("SUPERVISOR_RUNTIME_DIR", None)  # the session's private registry (conftest.py)
    assert facts == {
        "SUPERVISOR_SIDECAR": "agent-monitor",
        "SUPERVISOR_PORT": "47821",
        "SUPERVISOR_HOLDER_PID": "4242",
        "SUPERVISOR_HOLDER_COMMAND": "node server/index.js --title 'a b' \"$HOME\"",
        "SUPERVISOR_HOLDER_USER": "alice",
        "SUPERVISOR_HOLDER_VERDICT": "live",
    }


@pytest.mark.anyio
async def test_deny_declines_without_running_anything(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    reclaim = ReclaimConfig(consent=ConsentMode.DENY, consent_command=("touch", str(ran)))
    for stdin_is_tty in (True, False):
        result = await consent.ask(reclaim, REQUEST, stdin_is_tty=stdin_is_tty)
        assert not result.granted
        assert result.provider is Provider.DENY
    assert not ran.exists()


@pytest.mark.anyio
async def test_auto_without_tty_or_command_denies() -> None:
    result = await consent.ask(ReclaimConfig(), REQUEST, stdin_is_tty=False)
    assert result == consent.ConsentResult(
        False, Provider.DENY, "no terminal and no consent_command"
    )


@pytest.mark.anyio
async def test_auto_without_tty_runs_the_command() -> None:
    reclaim = ReclaimConfig(consent_command=("sh", "-c", "exit 0"))
    result = await consent.ask(reclaim, REQUEST, stdin_is_tty=False)
    assert result == consent.ConsentResult(True, Provider.COMMAND, "command exited 0")


@pytest.mark.anyio
async def test_tty_mode_without_a_terminal_declines() -> None:
    reclaim = ReclaimConfig(consent=ConsentMode.TTY, consent_command=("sh", "-c", "exit 0"))
    result = await consent.ask(reclaim, REQUEST, stdin_is_tty=False)
    assert not result.granted
    assert result.provider is Provider.TTY
    assert "not a terminal" in result.detail


# --- tty provider through a real pseudo-terminal -----------------------------------------------

ASKER = textwrap.dedent(
    """
    import json, sys
    import anyio
    from supervisor.config import ConsentMode, ReclaimConfig
    from supervisor.reconcile import consent

    reclaim = ReclaimConfig(consent=ConsentMode.TTY, consent_timeout_s=float(sys.argv[2]))
    request = consent.ConsentRequest(
        "agent-monitor", 47821, 4242, "alice", "node server/index.js", float(sys.argv[3])
    )
    if sys.argv[4:] == ["background"]:
        # Make the pty our controlling terminal, then hand its foreground to another job.
        import fcntl, os, subprocess, termios
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        job = subprocess.Popen(["sleep", "30"], process_group=0)
        os.tcsetpgrp(0, job.pid)
        try:
            result = anyio.run(consent.ask, reclaim, request)
        finally:
            job.kill()
            job.wait()
    else:
        result = anyio.run(consent.ask, reclaim, request)
    with open(sys.argv[1], "w") as f:
        json.dump({"granted": result.granted, "provider": result.provider.value,
                   "detail": result.detail}, f)
    """
)
PROMPT_END = b"[y/N] "


class Terminal:
    """The master side of a pty whose slave is a child's stdin, stdout and stderr."""

    def __init__(self, master: int, process: subprocess.Popen[bytes], result: Path) -> None:
        self.master = master
        self.process = process
        self.result = result
        self.seen = b""

    def read_until(self, needle: bytes, timeout_s: float = 15.0) -> bytes:
        deadline = time.monotonic() + timeout_s
        while needle not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{needle!r} never appeared; terminal showed {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every slave fd is closed, the child is gone
                chunk = b""
            assert chunk, f"terminal closed before {needle!r}; it showed {self.seen!r}"
            self.seen += chunk
        return self.seen

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def outcome(self, timeout_s: float = 15.0) -> dict[str, object]:
        code = self.process.wait(timeout=timeout_s)
        assert code == 0, self.seen.decode(errors="replace")
        data: dict[str, object] = json.loads(self.result.read_text())
        return data


@contextlib.contextmanager
def terminal_asker(
    tmp_path: Path, *, timeout_s: float = 15.0, background: bool = False
) -> Iterator[Terminal]:
    master, slave = pty.openpty()
    result = tmp_path / "result.json"
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", ASKER, str(result), str(timeout_s), str(STARTED_AT)]
            + (["background"] if background else []),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    try:
        yield Terminal(master, process, result)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        os.close(master)


@pytest.mark.parametrize(
    ("answer", "granted", "detail"),
    [
        (b"y\n", True, "answered yes"),
        (b"YES\n", True, "answered yes"),
        (b"n\n", False, "answered no"),
        (b"\n", False, "answered no (default)"),
        (b"sure\n", False, "answered no (sure is not yes)"),
    ],
    ids=["y", "YES", "n", "enter-defaults-to-no", "other-text"],
)
def test_tty_answer(answer: bytes, granted: bool, detail: str, tmp_path: Path) -> None:
    with terminal_asker(tmp_path) as terminal:
        terminal.read_until(PROMPT_END)
        terminal.type(answer)
        assert terminal.outcome() == {"granted": granted, "provider": "tty", "detail": detail}


def test_tty_prompt_shows_the_holder(tmp_path: Path) -> None:
    with terminal_asker(tmp_path) as terminal:
        shown = terminal.read_until(PROMPT_END).decode()
        terminal.type(b"n\n")
        terminal.outcome()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(STARTED_AT))
    for fact in (
        "47821",
        "agent-monitor",
        "pid 4242",
        "user alice",
        "node server/index.js",
        started,
    ):
        assert fact in shown, f"{fact!r} missing from the prompt {shown!r}"


def test_tty_without_answer_times_out_as_no(tmp_path: Path) -> None:
    with terminal_asker(tmp_path, timeout_s=0.5) as terminal:
        terminal.read_until(PROMPT_END)
        assert terminal.outcome() == {
            "granted": False,
            "provider": "tty",
            "detail": "timed out after 0.5s",
        }


def test_tty_type_ahead_is_not_an_answer(tmp_path: Path) -> None:
    with terminal_asker(tmp_path, timeout_s=0.5) as terminal:
        # Typed while the asker is still starting up: flushed before the question is shown.
        terminal.type(b"y\n")
        terminal.read_until(PROMPT_END)
        assert terminal.outcome()["granted"] is False


def test_tty_of_a_background_job_is_not_read(tmp_path: Path) -> None:
    # Reading the terminal from a background job would stop the daemon with SIGTTIN.
    with terminal_asker(tmp_path, background=True) as terminal:
        outcome = terminal.outcome()
    assert outcome["granted"] is False
    assert outcome["detail"] == "the terminal belongs to another foreground job; cannot ask"
