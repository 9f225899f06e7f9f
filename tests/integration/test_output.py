"""Output files of real children: output.log and `supervisor logs` (-n, -f across rotation),
rotation bounds, a full disk, and the daemon's own rotated log file as the LaunchAgent runs it."""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import re
import signal
import stat
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

import anyio
import pytest
import structlog

from supervisor import service
from supervisor.service import Kind, ServiceSpec
from supervisor.sidecar import output
from supervisor.sidecar.outputlog import OutputLog
from supervisor.system.rotating import LineWriter, RotatingFile
from tests.integration.test_hostile import fill, one_error_line, run_cli, tiny_tmpfs
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    _readline,
    pid_gone,
    render_config,
    wait_until,
)

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"

PRINTS = """
import signal, sys
for n in range(int(sys.argv[1])):
    print(f"line {n:05d}")
    if n % 10 == 0:
        print(f"err {n:05d}", file=sys.stderr)
print("done", flush=True)
sys.stderr.flush()
while True:
    signal.pause()
"""

TICKS = """
import sys, time
n = 0
while True:
    print(f"tick {n:06d}", flush=True)
    n += 1
    time.sleep(float(sys.argv[1]))
"""


def script_sidecar(
    tmp_path: Path, name: str, script: str, *args: str, **tables: object
) -> dict[str, object]:
    """A sidecar without a port (ready at spawn) running `script`."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(script))
    entry: dict[str, object] = {
        "name": name,
        "command": [PYTHON, str(path), *args],
        "restart": {"base_delay": 0.05, "max_delay": 0.2},
        "stop": {"timeout": 1.0},
    }
    entry.update(tables)
    return entry


def start(
    tmp_path: Path,
    sidecars: list[dict[str, object]],
    state: Path | None = None,
    supervisor: Mapping[str, object] | None = None,
) -> Daemon:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars, supervisor))
    return Daemon(config, state or tmp_path / "state")


def logs(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("logs", *args, "--state-dir", str(state))


def wait_for_text(path: Path, text: bytes, timeout: float = 15.0) -> None:
    def shown() -> bool:
        try:
            return text in path.read_bytes()
        except FileNotFoundError:  # not yet, or renamed by a rotation between two looks
            return False

    wait_until(shown, timeout, f"{text!r} in {path}")


def contents(folder: Path) -> list[bytes]:
    """The bytes of each file in `folder` (which may not exist yet, or rotate meanwhile)."""
    found = []
    for name in os.listdir(folder) if folder.is_dir() else []:
        with contextlib.suppress(FileNotFoundError):
            found.append((folder / name).read_bytes())
    return found


def test_logs_shows_the_last_lines_with_time_and_stream(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with start(tmp_path, [script_sidecar(tmp_path, "web", PRINTS, "200")], state) as daemon:
        daemon.wait_for("child_output", line="done")
        output_log = state / "web" / "output.log"
        wait_for_text(output_log, b"stdout done\n")
        wait_for_text(output_log, b"stderr err 00190\n")  # the other pipe, read side by side
        assert stat.S_IMODE(output_log.stat().st_mode) == 0o600

        written = output_log.read_text().splitlines()
        assert len(written) == 200 + 20 + 1
        for line in written:
            stamp, stream, text = line.split(" ", 2)
            assert re.fullmatch(STAMP, stamp)
            assert (stream, text[:4]) in {
                ("stdout", "line"),
                ("stderr", "err "),
                ("stdout", "done"),
            }
        # Each stream in its own order.
        for stream, first_word in (("stdout", "line"), ("stderr", "err")):
            texts = [line.split(" ", 2)[2] for line in written if line.split(" ")[1] == stream]
            numbered = [text for text in texts if text.startswith(first_word)]
            assert numbered == sorted(numbered)

        last = logs(state, "web", "-n", "3")
        assert last.returncode == 0 and last.stderr == ""
        assert last.stdout.splitlines() == written[-3:]
        default = logs(state, "web")
        assert default.returncode == 0
        assert default.stdout.splitlines() == written[-50:]  # the default -n
        assert logs(state, "web", "-n", "10000").stdout.splitlines() == written
        assert logs(state, "web", "-n", "0").stdout == ""

        # Every line is also a child_output event.
        assert len(daemon.find("child_output", sidecar="web")) == 200 + 20 + 1

        unknown = logs(state, "nope")
        assert unknown.returncode == 2
        assert 'no sidecar named "nope"' in one_error_line(unknown.stderr)
        assert daemon.stop() == 0


def test_rotation_keeps_output_log_within_max_bytes_plus_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state"
    output = {"max_bytes": 2048, "backups": 2}
    entry = script_sidecar(tmp_path, "web", PRINTS, "2000", output=output)
    with start(tmp_path, [entry], state) as daemon:
        daemon.wait_for("child_output", line="done")
        folder = state / "web"
        wait_for_text(folder / "output.log", b"stdout done\n")
        names = sorted(p.name for p in folder.iterdir() if p.name.startswith("output.log"))
        assert names == ["output.log", "output.log.1", "output.log.2"]
        kept: list[str] = []
        for name in reversed(names):  # oldest first
            data = (folder / name).read_bytes()
            longest = max(len(line) for line in data.splitlines(keepends=True))
            assert len(data) <= 2048 + longest
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
            kept += [line.split(" ", 1)[1] for line in data.decode().splitlines()]
        # The newest lines, none lost or repeated, in order.
        stdout = [line for line in kept if line.startswith("stdout line")]
        numbers = [int(line.split()[-1]) for line in stdout]
        assert numbers == list(range(numbers[0], 2000))
        assert kept[-1] == "stdout done"
        assert daemon.stop() == 0


TERMINAL_SIGINT = ["env", "--default-signal=INT", "--"]  # coreutils >= 8.31
FOLLOW = [PYTHON, "-m", "supervisor", "logs", "web", "-f", "-n", "1"]


def test_logs_follow_keeps_following_across_rotations(tmp_path: Path) -> None:
    state = tmp_path / "state"
    output = {"max_bytes": 1024, "backups": 3}  # 30 ticks to a file: a rotation every ~0.3 s
    entry = script_sidecar(tmp_path, "web", TICKS, "0.01", output=output)
    with start(tmp_path, [entry], state) as daemon:
        daemon.wait_for("child_output", line="tick 000005")
        follow = subprocess.Popen(
            # As from a terminal: SIGINT at its default disposition (env --default-signal),
            # whatever the test process inherited or was left with below Python.
            [*TERMINAL_SIGINT, *FOLLOW, "--state-dir", str(state)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")},
        )
        try:
            assert follow.stdout is not None
            ticks: list[int] = []
            while len(ticks) < 150:  # five files' worth, followed line by line
                line = _readline(follow.stdout, 10.0).decode()
                assert line, f"logs -f went quiet after {ticks[-3:]}"
                assert re.fullmatch(STAMP + r" stdout tick \d{6}\n", line), line
                ticks.append(int(line.split()[-1]))
            assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # no gap, no repeat
            assert (state / "web" / "output.log.3").exists()
            follow.send_signal(signal.SIGINT)  # Ctrl-C
            # Drain both pipes while it exits: a follower still writing into a pipe nobody
            # reads would block there, and the test with it.
            _, err = follow.communicate(timeout=10)
            assert follow.returncode == 130
            assert err == b""  # quietly
        finally:
            if follow.poll() is None:
                follow.kill()
                follow.wait(10)
        assert daemon.stop() == 0


def test_output_file_off_writes_no_file_and_logs_says_so(tmp_path: Path) -> None:
    state = tmp_path / "state"
    entry = script_sidecar(tmp_path, "web", PRINTS, "3", output={"file": False})
    config = tmp_path / "supervisor.toml"
    with start(tmp_path, [entry], state) as daemon:
        daemon.wait_for("child_output", line="done")
        assert not (state / "web" / "output.log").exists()
        result = run_cli("logs", "web", "-c", str(config), "--state-dir", str(state))
        assert result.returncode == 2
        assert "output.file = false" in one_error_line(result.stderr)
        assert daemon.stop() == 0


CHATTY = """
import sys, time
n = 0
while True:
    print(f"chatty {n:08d} " + "x" * 100, flush=True)
    n += 1
    if n % 20 == 0:
        time.sleep(0.01)
"""


@pytest.mark.root
def test_a_full_disk_drops_lines_and_supervision_goes_on(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        with start(tmp_path, [script_sidecar(tmp_path, "web", CHATTY)], state) as daemon:
            first = daemon.wait_for("sidecar_ready")["pid"]
            wait_for_text(state / "web" / "output.log", b"chatty ")
            filler = fill(disk)
            dropped = daemon.wait_for("output_lines_dropped", sidecar="web", timeout=30)
            assert dropped["count"] > 0 and dropped["error"] == os.strerror(28)  # ENOSPC
            # Supervision goes on: a crash is noticed and the child restarted, ready again.
            os.kill(first, signal.SIGKILL)
            second = daemon.wait_for("sidecar_ready", count=2)["pid"]
            assert second != first and pid_gone(first)
            status = daemon.dump_status()["status"]
            assert [s["state"] for s in status["sidecars"]] == ["ready"]
            # Space again: writing resumes, and the file says where lines are missing.
            filler.unlink()
            for name in os.listdir(state / "web"):
                if name.startswith("output.log."):
                    os.unlink(state / "web" / name)
            marker = re.compile(rb"supervisor \d+ lines missing here \(writing failed: ")
            wait_until(
                lambda: marker.search((state / "web" / "output.log").read_bytes()) is not None,
                15.0,
                "the gap line",
            )
            assert daemon.proc.poll() is None
            assert daemon.stop() == 0
        assert pid_gone(second)


FLOODS = """
import os, sys
count = int(sys.argv[1])
for start in range(0, count, 1000):
    os.write(1, b"".join(b"%07d %s\\n" % (n, b"x" * 71) for n in range(start, start + 1000)))
os.write(1, b"done\\n")
"""


class Watched(OutputLog):
    """An OutputLog that counts the times its writer was found congested: proof the drain
    engaged (the flood did outrun the writer), so that the test cannot pass on a writer that
    simply kept up."""

    congested_seen = 0

    def congested(self) -> bool:
        answer = super().congested()
        self.congested_seen += answer
        return answer


@pytest.mark.parametrize("queue_bytes", [4096, 64 * 1024])
def test_a_writer_that_falls_behind_slows_the_child_and_loses_no_line(
    queue_bytes: int, tmp_path: Path
) -> None:
    """A child floods its pipe far faster than a small writer queue drains: the pipe is read only
    as fast as the writer takes the lines (the child waits on its pipe), and output.log holds
    every line, in order. (Run without the drain, both cases lose lines; `bench output` once lost
    110k of 200k lines in the default 1 MiB queue on a loaded machine.)"""
    lines = 50_000
    script = tmp_path / "floods.py"
    script.write_text(FLOODS)
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        file = RotatingFile(folder, "output.log", max_bytes=1 << 30, backups=0)
    finally:
        os.close(folder)
    writer = LineWriter(file, max_pending_bytes=queue_bytes)
    outlog = Watched(writer, str(tmp_path / "output.log"), structlog.get_logger())
    child = subprocess.Popen([PYTHON, "-I", "-S", str(script), str(lines)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    fd = child.stdout.fileno()
    os.set_blocking(fd, False)

    async def forward() -> None:
        try:
            with anyio.fail_after(60):
                await output.forward_lines(fd, "stdout", outlog.write, outlog)
        finally:
            await outlog.aclose()  # the writer thread and the file, whatever happened

    try:
        anyio.run(forward)
    finally:
        child.stdout.close()
        if child.poll() is None:
            child.kill()
        code = child.wait(10)
    assert code == 0
    assert outlog.congested_seen > 0, "the writer never fell behind: the drain was not tested"
    written = (tmp_path / "output.log").read_bytes().splitlines()
    assert writer.dropped == 0
    assert len(written) == lines + 1
    assert written[-1].endswith(b" stdout done")
    expected = [b" stdout %07d %s" % (n, b"x" * 71) for n in range(lines)]
    assert [w[w.index(b" stdout ") :] for w in written[:-1]] == expected  # every line, in order


def test_the_launchagents_daemon_log_goes_to_a_rotated_file(tmp_path: Path) -> None:
    """`supervisor run` exactly as the rendered LaunchAgent starts it (its --log-file), with
    small rotation limits: the daemon's JSON log is rotated, and nothing goes to stderr."""
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [script_sidecar(tmp_path, "web", PRINTS, "300")],
            {"log_max_bytes": 4096, "log_backups": 2},
        )
    )
    spec = ServiceSpec(python=Path(PYTHON), config=config, home=tmp_path / "home")
    agent = service.render(Kind.LAUNCHD, spec)
    argv = plistlib.loads(agent.encode())["ProgramArguments"]
    log_file = spec.home / "Library" / "Logs" / "sidecar-supervisor" / "supervisor.log"
    assert argv[-2:] == ["--log-file", str(log_file)]
    daemon = subprocess.Popen(
        [*argv, "--state-dir", str(tmp_path / "state")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        folder = log_file.parent
        wait_until(
            lambda: any(b'"line": "done"' in data for data in contents(folder)),
            20.0,
            "the child's last line in the daemon's log",
        )
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
    assert daemon.returncode == 0
    assert out == b"" and err == b""
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["supervisor.log", "supervisor.log.1", "supervisor.log.2"]
    for name in names:
        data = (folder / name).read_bytes()
        lines = data.splitlines(keepends=True)
        assert len(data) <= 4096 + max(len(line) for line in lines)
        events = [json.loads(line) for line in lines]
        assert all({"event", "level", "timestamp"} <= set(e) for e in events)
    last = json.loads((folder / "supervisor.log").read_bytes().splitlines()[-1])
    assert last["event"] == "daemon_stopped"


# -- `logs` with no name: every sidecar merged in time order ---------------------------------

TAKE_TURNS = """
import pathlib, sys, time
mine, theirs, steps = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
for step in steps:
    if step.startswith("wait:"):
        want = step[5:].encode()
        while not (theirs.exists() and want in theirs.read_bytes()):
            time.sleep(0.005)
        time.sleep(0.005)  # the next stamp is a later millisecond than theirs
    else:
        print(step, flush=True)
time.sleep(3600)
"""


def test_logs_without_a_name_merges_every_sidecar_in_time_order(tmp_path: Path) -> None:
    state = tmp_path / "state"
    turns = {
        "a": ["a1", "wait:b1", "a2", "wait:b2", "a3"],
        "b": ["wait:a1", "b1", "wait:a2", "b2"],
    }
    sidecars = [
        {
            "name": name,
            "command": [PYTHON, "-c", TAKE_TURNS, name, str(state / other / "output.log"), *steps],
            "ready": {"probe": "none"},
            "stop": {"timeout": 2.0},
        }
        for (name, steps), other in zip(turns.items(), ["b", "a"], strict=True)
    ]
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars))
    with Daemon(config, state) as daemon:
        wait_for_text(state / "a" / "output.log", b"a3")
        result = run_cli("logs", "-c", str(config), "--state-dir", str(state))
        assert result.returncode == 0, result.stderr
        said = [
            (line.split(" | ")[0].strip(), line.split()[-1]) for line in result.stdout.splitlines()
        ]
        assert said == [("a", "a1"), ("b", "b1"), ("a", "a2"), ("b", "b2"), ("a", "a3")]
        # -n counts lines of the merge; two names merge the same way.
        last = run_cli("logs", "b", "a", "-n", "2", "--state-dir", str(state)).stdout
        assert [line.split()[-1] for line in last.splitlines()] == ["b2", "a3"]
        assert last.splitlines()[0].startswith("b | ")
        assert daemon.stop() == 0
