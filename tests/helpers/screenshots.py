"""Capture docs/screenshots/*.txt from a real terminal (tmux): run, status, logs, top.

    .venv/bin/python -m tests.helpers.screenshots     # needs tmux; writes docs/screenshots/

Three sidecars on free ports in a scratch folder (`/tmp/sidecar-demo` when it is free), a
120x32 terminal, each screen captured once it shows what it is meant to show.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.helpers.screen import Screen
from tests.support import PYTHON, ROOT, demo_command, free_port, render_config

OUT = ROOT / "docs" / "screenshots"
WORKER = (
    "import itertools, time\n"
    "for n in itertools.count(1):\n"
    "    time.sleep(0.7)\n"
    "    print(f'job {n} done in {40 + n * 7 % 23} ms', flush=True)\n"
)


def _folder() -> Path:
    fixed = Path("/tmp/sidecar-demo")
    if not fixed.exists():
        fixed.mkdir()
        return fixed
    return Path(tempfile.mkdtemp(prefix="sidecar-demo-"))


def _shell(command: str, folder: Path) -> list[str]:
    """A pane that looks like a shell session: the prompt, the command, its output."""
    run = f"{Path(sys.executable).parent}/{command}"
    return ["sh", "-c", f"cd {folder} && echo '$ {command}' && exec {run}"]


def main() -> int:
    folder = _folder()
    api, web = free_port(), free_port()
    config = folder / "supervisor.toml"
    config.write_text(
        render_config(
            [
                {"name": "api", "command": demo_command(api), "port": api,
                 "ready": {"probe": "http", "path": "/health"}},
                {"name": "web", "command": demo_command(web), "port": web},
                {"name": "worker", "command": [PYTHON, "-c", WORKER]},
            ],
            {"state_dir": str(folder / "state")},
        )
    )  # fmt: skip
    # A registry of its own: only this daemon is found by status, logs and top.
    env = {"TERM": "xterm-256color", "NO_COLOR": "1", "SUPERVISOR_RUNTIME_DIR": str(folder)}
    screen = Screen(folder, width=120, height=32)
    OUT.mkdir(parents=True, exist_ok=True)
    try:
        screen.start("run", _shell("supervisor run -c supervisor.toml", folder), env, folder)
        screen.wait_for("run", "Ctrl-C here stops them all")
        screen.wait_for("run", "job 3 done")
        (OUT / "run.txt").write_text(_trim(screen.text("run")))
        screen.start("status", _shell("supervisor status", folder), env, folder)
        screen.exit_status("status")
        (OUT / "status.txt").write_text(_trim(screen.text("status", history=True)))
        screen.start("logs", _shell("supervisor logs -n 8", folder), env, folder)
        screen.exit_status("logs")
        (OUT / "logs.txt").write_text(_trim(screen.text("logs", history=True)))
        screen.start("top", _shell("supervisor top", folder), env, folder)
        screen.wait_for("top", "3/3 ready")
        screen.wait_for("top", "last: job")
        (OUT / "top.txt").write_text(_trim(screen.text("top")))
        screen.keys("top", "q")
        screen.exit_status("top")
        screen.keys("run", "C-c")
        screen.exit_status("run")
        (OUT / "run-stopped.txt").write_text(_trim(screen.text("run", history=True)))
    finally:
        subprocess.run(
            [PYTHON, "-m", "supervisor", "stop", "--state-dir", str(folder / "state")],
            capture_output=True, check=False, timeout=60, env={**os.environ, **env},
        )  # fmt: skip
        screen.close()
        shutil.rmtree(folder, ignore_errors=True)
    for name in sorted(OUT.glob("*.txt")):
        print(f"wrote {name.relative_to(ROOT)}")
    return 0


def _trim(text: str) -> str:
    # Without tmux's own "Pane is dead (status 0, ...)" line once the program exited.
    lines = [line.rstrip() for line in text.splitlines() if not line.startswith("Pane is dead")]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
