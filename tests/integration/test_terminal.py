"""The person at the terminal, end to end: `run` and `top` in a real terminal (tmux).

What the screen shows is asserted: the ready line with its URL, the summary and what to do next,
the consent question alone on its line while other sidecars keep printing, and `top`'s view.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.screen import TMUX, Screen
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    render_config,
    wait_until,
)

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")

MARKER = "live-instance-of-held"
PROMPT = "Kill pid {pid} and start a new held? [y/N]"  # the question names the holder
# Prints all the time: the question must stay the last thing on the screen all the same.
TICKER = (
    "import itertools, time\n"
    "for i in itertools.count():\n"
    "    print('tick', i, flush=True)\n"
    "    time.sleep(0.02)\n"
)


@pytest.fixture
def screen(tmp_path: Path) -> Iterator[Screen]:
    shown = Screen(tmp_path)
    try:
        yield shown
    finally:
        shown.close()


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "SUPERVISOR_RUNTIME_DIR": os.environ["SUPERVISOR_RUNTIME_DIR"],
        "TERM": "xterm-256color",
        "NO_COLOR": "1",  # the assertions read plain text
        "HOME": str(tmp_path),
    }


def _cli(*args: str) -> list[str]:
    return [PYTHON, "-m", "supervisor", *args]


def _lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_run_says_ready_sums_up_and_asks_alone_on_its_line(tmp_path: Path, screen: Screen) -> None:
    api, web, held = free_port(), free_port(), free_port()
    state = tmp_path / "state"
    ticker: dict[str, object] = {
        "name": "ticker",
        "command": [PYTHON, "-c", TICKER],
        "stop": {"timeout": 2.0},
    }
    sidecars = [
        ticker,
        demo_sidecar("api", api, ready={"probe": "http", "path": "/health"}),
        demo_sidecar("web", web),
        demo_sidecar("held", held, marker=MARKER),
    ]
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars))
    with Holder(held, "127.0.0.1", "-", MARKER) as holder, stopped_at_the_end(state):
        prompt = PROMPT.format(pid=holder.pid)
        screen.start("run", _cli("run", "-c", str(config), "--state-dir", str(state)),
                     _env(tmp_path), ROOT)  # fmt: skip
        screen.wait_for("run", prompt)
        # The ticker keeps printing while the question is open (its output.log grows) ...
        log = state / "ticker" / "output.log"
        grown = _lines_in(log) + 25
        wait_until(lambda: _lines_in(log) >= grown, 15, "the ticker to print 25 more lines")
        # ... yet nothing is written after the question: it stays the last thing on screen.
        shown = [line.rstrip() for line in screen.text("run").splitlines() if line.strip()]
        assert shown[-1] == prompt, shown[-6:]
        question = "\n".join(shown[-12:])
        assert f"pid {holder.pid}, user " in question and "  command: " in question
        # `status` says what the launch waits for.
        status = screen_status(tmp_path, state)
        assert re.search(r"held\s+starting\s+.*waiting for your answer in the terminal", status)

        screen.keys("run", "n", "Enter")
        history = screen.wait_for("run", "3/4 ready", history=True)
        lines = history.splitlines()
        # The answer sits on the question's line, and nothing else does.
        assert f"{prompt} n" in lines
        assert re.search(
            rf"^\d\d:\d\d:\d\d  api +ready +http://127\.0\.0\.1:{api}/health  \(\d+ ms\)$",
            history,
            re.M,
        ), history
        assert re.search(rf"^\d\d:\d\d:\d\d  web +ready +tcp://127\.0\.0\.1:{web} ", history, re.M)
        assert re.search(r"^\d\d:\d\d:\d\d  ticker +\| tick 0$", history, re.M)
        assert re.search(r"^\d\d:\d\d:\d\d    held: waiting: port \d+ is held", history, re.M)
        assert f"next: supervisor status -c {config}" in history
        assert "Ctrl-C here stops them all" in history
        # No machine noise for the person: no None, no bookkeeping events, no long lines.
        assert "None" not in history and "pidfile_written" not in history
        logged = [line for line in lines if re.match(r"\d\d:\d\d:\d\d  ", line)]
        assert max(len(line) for line in logged) <= 160, max(logged, key=len)
        assert holder.untouched()

        screen.keys("run", "C-c")
        assert screen.exit_status("run") in (0, None)  # None: gone, status unknown to tmux
        history = screen.text("run", history=True)
        assert re.search(r"^\d\d:\d\d:\d\d  supervisor +stopped +pid \d+$", history, re.M)


@contextlib.contextmanager
def stopped_at_the_end(state: Path) -> Iterator[None]:
    """Whatever happens, the daemon in the pane is stopped (tmux's SIGHUP would only reload it)."""
    try:
        yield
    finally:
        if (state / "supervisor.pid").exists():
            subprocess.run(
                _cli("stop", "--state-dir", str(state), "--wait", "20"),
                capture_output=True, timeout=60, cwd=ROOT, check=False,
            )  # fmt: skip


def screen_status(tmp_path: Path, state: Path) -> str:
    done = subprocess.run(
        _cli("status", "--state-dir", str(state)),
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_top_shows_every_sidecar_and_acts_on_keys(tmp_path: Path, screen: Screen) -> None:
    api, web = free_port(), free_port()
    state = tmp_path / "state"
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [demo_sidecar("api", api, ready={"probe": "http", "path": "/health"}),
             demo_sidecar("web", web)]
        )
    )  # fmt: skip
    with Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="api")
        daemon.wait_for("sidecar_ready", sidecar="web")
        screen.start("top", _cli("top", "--state-dir", str(state)), _env(tmp_path), ROOT)
        shown = screen.wait_for("top", "2/2 ready")
        assert re.search(
            rf"^> api +ready +\d+ +http://127\.0\.0\.1:{api}/health +0 +\d+s ", shown, re.M
        )
        assert re.search(rf"^  web +ready +\d+ +tcp://127\.0\.0\.1:{web} ", shown, re.M)
        assert "last: listening on 127.0.0.1:" in shown
        assert re.search(r"\d+(\.\d)?M$", shown.splitlines()[3].rstrip()), shown  # memory
        # Down, then s: web stops; the event redraws the view.
        screen.keys("top", "Down")
        screen.wait_for("top", "> web ")
        screen.keys("top", "s")
        shown = screen.wait_for("top", "web: stop done (now stopped)")
        assert re.search(r"^> web +stopped +- ", shown, re.M)
        assert "1/2 ready" in shown
        daemon.wait_for("sidecar_stopped", sidecar="web")
        screen.keys("top", "a")
        screen.wait_for("top", "2/2 ready")
        screen.keys("top", "q")
        assert screen.exit_status("top") in (0, None)
        assert "NAME" not in screen.text("top")  # the terminal's own screen is back
        assert daemon.stop() == 0
