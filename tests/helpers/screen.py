"""A real terminal for end-to-end tests: a private tmux server, its panes, what they show.

Each Screen runs its own tmux server (its own socket in a tmp dir), so nothing of the user's
tmux is touched; `close` kills that server. Reading a terminal has no handshake other than
what it shows, so `wait_for` re-reads the pane until the text appears, bounded by a timeout.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TMUX = shutil.which("tmux")
WIDTH, HEIGHT = 160, 45
READ_EVERY_S = 0.05


class Screen:
    def __init__(self, folder: Path, width: int = WIDTH, height: int = HEIGHT) -> None:
        if TMUX is None:
            raise RuntimeError("tmux is not installed")
        self.socket = folder / "tmux.sock"
        self.width, self.height = width, height
        self._started = False

    def _tmux(self, *args: str, check: bool = True) -> str:
        assert TMUX is not None
        done = subprocess.run(
            [TMUX, "-S", str(self.socket), *args],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> None:
        """Run `argv` in a new window `name`; the pane stays (dead) after it exits."""
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # COLUMNS/LINES of the caller would override the pane's real size (ncurses reads them).
        line = f"exec env -u COLUMNS -u LINES {exports} {shlex.join(argv)}"
        where = ["-c", str(cwd), "-n", name]
        if not self._started:
            conf = self.socket.with_name("tmux.conf")
            conf.write_text("set -g remain-on-exit on\nset -g history-limit 50000\n")
            size = ["-x", str(self.width), "-y", str(self.height)]
            self._tmux("-f", str(conf), "new-session", "-d", "-s", "t", *where, *size, line)
            self._started = True
        else:
            self._tmux("new-window", "-d", "-t", "t", *where, line)

    def exit_status(self, name: str, timeout: float = 30.0) -> int | None:
        """Wait until the program in the pane has exited: its exit status (-N: killed by signal
        N), or None when its process is gone but tmux could not tell how it ended."""
        deadline = time.monotonic() + timeout
        while True:
            dead, code, killed, pid = (
                self._tmux(
                    "display-message", "-p", "-t", f"t:{name}",
                    "#{pane_dead}:#{pane_dead_status}:#{pane_dead_signal}:#{pane_pid}",
                ).strip().split(":")
            )  # fmt: skip
            if dead == "1" and (code or killed):
                return int(code) if code else -int(killed)
            if dead == "1" and pid and _proc_state(pid)[:1] in ("g", "Z"):
                # It exited, but tmux 3.3a sometimes never reaps it (a zombie of the server,
                # SIGCHLD neither blocked nor ignored), so its status never comes.
                return None
            if time.monotonic() > deadline:
                state = _proc_state(pid)
                raise AssertionError(
                    f"{name!r} did not exit (dead={dead}, pid {pid}: {state}); it shows:\n"
                    + self.text(name)
                )
            time.sleep(READ_EVERY_S)

    def text(self, name: str, *, history: bool = False) -> str:
        """What the pane shows (with `history`, everything it ever showed), lines unwrapped."""
        extra = ["-S", "-"] if history else []
        return self._tmux("capture-pane", "-p", "-J", "-t", f"t:{name}", *extra)

    def wait_for(self, name: str, needle: str, timeout: float = 30.0, **kw: bool) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.text(name, **kw)
            if needle in shown:
                return shown
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never showed in {name!r}; it shows:\n{shown}")
            time.sleep(READ_EVERY_S)

    def keys(self, name: str, *keys: str) -> None:
        self._tmux("send-keys", "-t", f"t:{name}", *keys)

    def close(self) -> None:
        if self._started:
            self._tmux("kill-server", check=False)
        for path in (self.socket, self.socket.with_name("tmux.conf")):
            if path.exists():
                os.unlink(path)


def _proc_state(pid: str) -> str:
    """`Z, parent 123 (tmux: server ...) SigBlk=...`: what to know of a pane that did not end."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().split(")")[-1].split()
        state, ppid = fields[0], fields[1]
        with open(f"/proc/{ppid}/cmdline", "rb") as cmdline:
            parent = cmdline.read().replace(b"\0", b" ").decode(errors="replace")[:60]
        with open(f"/proc/{ppid}/status") as status:
            masks = [line.strip() for line in status if line.startswith(("SigBlk", "SigIgn"))]
    except (OSError, IndexError):
        return "gone"
    return f"{state}, parent {ppid} ({parent}) {' '.join(masks)}"
