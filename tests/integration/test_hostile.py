"""Hostile input: garbage records, planted symlinks, unusable state dirs, a full disk, fuzzed
configs and children with pathological output. Each gets a clear error or graceful handling; the
daemon keeps supervising and writes nothing outside its state dir.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import cli
from tests import support
from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    demo_sidecar,
    free_port,
    pid_gone,
    read_json,
    render_config,
    toml_value,
)

HUGE_BYTES = 100 * 1024 * 1024
RECORDS = ("supervisor.pid", "status.json", "web/sidecar.pid")


# -- helpers ---------------------------------------------------------------------------------


def snapshot(root: Path, exclude: Path) -> dict[str, tuple[str, int, str]]:
    """Every entry under `root` but `exclude`: kind, size and a digest of small regular files."""
    result: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        if here == exclude or exclude in here.parents:
            dirnames[:] = []
            continue
        for entry in [*dirnames, *filenames]:
            path = here / entry
            if path == exclude:
                continue
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                result[str(path)] = ("link", 0, os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                digest = ""
                if info.st_size <= 1 << 20:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                result[str(path)] = ("file", info.st_size, digest)
            else:
                result[str(path)] = ("dir" if stat.S_ISDIR(info.st_mode) else "other", 0, "")
    return result


@contextlib.contextmanager
def nothing_written_outside(root: Path, state_dir: Path) -> Iterator[None]:
    before = snapshot(root, state_dir)
    yield
    after = snapshot(root, state_dir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"written outside the state dir: {sorted(changed)}"


def sidecar_config(tmp_path: Path, port: int, **overrides: object) -> Path:
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config([demo_sidecar("web", port, stop={"timeout": 1.0}, **overrides)])
    )
    return config


def custom_sidecar(tmp_path: Path, script: str, port: int) -> Path:
    """A sidecar running `script` (which must listen on argv[1]) under the tcp probe."""
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(script))
    entry: dict[str, object] = {
        "name": "web",
        "command": [PYTHON, str(path), str(port)],
        "port": port,
        "restart": {"base_delay": 0.05, "max_delay": 0.2},
        "stop": {"timeout": 1.0},
    }
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config([entry]))
    return config


def handshake(daemon: Daemon, timeout: float = 10.0) -> dict[str, object]:
    """SIGUSR2 -> `status_dumped` (the daemon still answers signals); returns the status."""
    status: dict[str, object] = daemon.dump_status(timeout)["status"]
    return status


def sidecar_states(status: dict[str, object]) -> dict[str, object]:
    sidecars = status["sidecars"]
    assert isinstance(sidecars, list)
    return {s["name"]: s["state"] for s in sidecars}


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    assert lines[0].startswith("supervisor: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


def run_cli(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    if args[:1] == ("run",) and "--log-format" not in args:
        # Off a TTY the daemon's fatal error is a JSON event (auto); these tests read the line.
        args = (*args, "--log-format", "console")
    return support.run_cli(*args, clean=True, timeout=timeout)


class Sleeper:
    """A live process of ours that must never be signalled by the code under test (by default
    a Python reading stdin; `argv` for another command, `new_session` to lead its own)."""

    def __init__(self, argv: list[str] | None = None, *, new_session: bool = False) -> None:
        self.proc = subprocess.Popen(
            argv or [PYTHON, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            start_new_session=new_session,
        )
        self.pid = self.proc.pid
        self.create_time = psutil.Process(self.proc.pid).create_time()

    def record(self) -> dict[str, object]:
        return {"pid": self.proc.pid, "create_time": self.create_time, "started_at": "x"}

    def untouched(self) -> bool:
        try:
            same = psutil.Process(self.proc.pid).create_time() == self.create_time
        except psutil.Error:
            return False
        return self.proc.poll() is None and same

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdin:
            self.proc.stdin.close()


@pytest.fixture
def sleeper() -> Iterator[Sleeper]:
    proc = Sleeper()
    try:
        yield proc
    finally:
        proc.stop()


def plant(path: Path, kind: str, outside: Path, sleeper: Sleeper) -> None:
    """Put a hostile `kind` of record at `path`; symlinks point at files under `outside`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    match kind:
        case "garbage":
            path.write_text("this is {not json at all\n")
        case "truncated":
            path.write_text(json.dumps(sleeper.record())[:17])
        case "empty":
            path.write_bytes(b"")
        case "huge":
            with path.open("wb") as file:
                file.truncate(HUGE_BYTES)  # sparse: fast, yet 100 MB to a naive reader
        case "binary":
            path.write_bytes(bytes(range(256)) * 64 + b"\x00\xff{\x80")
        case "wrong_types":
            path.write_text(json.dumps({"pid": "1", "create_time": [], "config": 7}))
        case "symlink":
            # A symlink to a well-formed record naming a live process: following it would make
            # `status` report that process and `stop` signal it.
            target = outside / f"{path.name}.target"
            target.write_text(json.dumps(sleeper.record()) + "\n")
            path.symlink_to(target)
        case "dangling_symlink":
            path.symlink_to(outside / f"{path.name}.missing")
        case _:
            raise ValueError(kind)


KINDS = [
    "garbage",
    "truncated",
    "empty",
    "huge",
    "binary",
    "wrong_types",
    "symlink",
    "dangling_symlink",
]


# -- hostile records -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_status_and_stop_treat_a_hostile_supervisor_pid_as_not_running(
    kind: str, tmp_path: Path, sleeper: Sleeper, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    outside = tmp_path / "outside"
    outside.mkdir()
    state.mkdir(mode=0o700)
    plant(state / "supervisor.pid", kind, outside, sleeper)
    for command in (["status"], ["status", "--json"], ["stop"], ["stop", "--wait", "1"]):
        code = cli.main([*command, "--state-dir", str(state)])
        captured = capsys.readouterr()
        assert code == 3, (command, captured)
        assert "no supervisor is running" in one_error_line(captured.err)
    assert sleeper.untouched()


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_supervises_normally_over_hostile_record_files(
    kind: str, tmp_path: Path, sleeper: Sleeper
) -> None:
    state = tmp_path / "state"
    outside = tmp_path / "outside"
    outside.mkdir()
    for record in RECORDS:
        plant(state / record, kind, outside, sleeper)
    config = sidecar_config(tmp_path, free_port())
    with nothing_written_outside(tmp_path, state), Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
        status = handshake(daemon)
        assert sidecar_states(status) == {"web": "ready"}
        for record in RECORDS:
            path = state / record
            assert stat.S_ISREG(os.lstat(path).st_mode), f"{record} is not a regular file now"
        assert read_json(state / "supervisor.pid")["pid"] == daemon.pid
        assert read_json(state / "web" / "sidecar.pid")["pid"] == pid
        assert read_json(state / "status.json")["supervisor"]["pid"] == daemon.pid
        assert daemon.stop() == 0
    assert not (state / "web" / "sidecar.pid").exists()
    assert not (state / "supervisor.pid").exists()
    assert sleeper.untouched()


def test_symlinked_lock_file_is_a_clear_error_and_its_target_is_untouched(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("do not touch\n")
    (state / "supervisor.lock").symlink_to(target)
    config = sidecar_config(tmp_path, free_port())
    with nothing_written_outside(tmp_path, state):
        result = run_cli("run", "-c", str(config), "--state-dir", str(state))
    assert result.returncode == 2
    assert "supervisor.lock" in one_error_line(result.stderr)


def test_symlinked_sidecar_dir_does_not_redirect_the_pid_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (state / "web").symlink_to(elsewhere, target_is_directory=True)
    config = sidecar_config(tmp_path, free_port())
    with Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="web")
        handshake(daemon)
        assert "symbolic link" in str(daemon.wait_for("pidfile_write_failed", timeout=0)["error"])
        written = sorted(p.name for p in elsewhere.iterdir())
        assert daemon.stop() == 0
    assert written == [], f"the daemon wrote {written} through the planted symlink"


# -- unusable state dirs ---------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes a chmod 000 dir anyway")
def test_unreadable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0)
    try:
        result = run_cli(
            "run", "-c", str(sidecar_config(tmp_path, free_port())), "--state-dir", str(state)
        )
    finally:
        state.chmod(0o700)
    assert result.returncode == 2
    assert str(state) in one_error_line(result.stderr)


def test_read_only_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    # The root-proof variant of an unreadable dir: a read-only mount stops root too.
    with tiny_tmpfs(tmp_path / "disk", "ro") as disk:
        result = run_cli(
            "run", "-c", str(sidecar_config(tmp_path, free_port())), "--state-dir", str(disk)
        )
    assert result.returncode == 2
    assert str(tmp_path / "disk") in one_error_line(result.stderr)


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_state_dir_that_is_a_file_is_a_clear_error(where: str, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a dir\n")
    state = blocker if where == "file" else blocker / "state"
    config = sidecar_config(tmp_path, free_port())
    with nothing_written_outside(tmp_path, tmp_path / "none"):
        result = run_cli("run", "-c", str(config), "--state-dir", str(state))
    assert result.returncode == 2
    assert "state dir" in one_error_line(result.stderr)
    for command in ("status", "stop", "reload", "restart"):
        other = run_cli(command, "--state-dir", str(state))
        assert other.returncode == 3, (command, other.stderr)
        one_error_line(other.stderr)


def test_state_dir_under_an_unknown_users_home_is_a_clear_error(tmp_path: Path) -> None:
    config = sidecar_config(tmp_path, free_port())
    state = "~no-such-user-for-supervisor-tests/state"
    for args in (
        ["run", "-c", str(config), "--state-dir", state],
        ["status", "--state-dir", state],
    ):
        result = run_cli(*args)
        assert result.returncode in (2, 3), (args, result.stderr)
        one_error_line(result.stderr)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_config_that_is_not_a_regular_file_is_a_clear_error(kind: str, tmp_path: Path) -> None:
    if kind == "fifo":
        config = tmp_path / "supervisor.toml"
        os.mkfifo(config)
    else:
        config = Path("/dev/zero")
    try:
        result = subprocess.run(
            [PYTHON, "-m", "supervisor", "check-config", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=5.0,
            cwd=ROOT,
            check=False,
            # Bounded, so that reading /dev/zero fails fast instead of eating the machine.
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"check-config blocked on a {kind} config")
    assert result.returncode == 2, result.stderr[-300:]
    one_error_line(result.stderr)


# -- a full disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(mountpoint: Path, *options: str) -> Iterator[Path]:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mountpoint.mkdir()
    mounted = subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            ",".join(["size=64k", "mode=0700", *options]),
            "tmpfs",
            str(mountpoint),
        ],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount -t tmpfs not permitted here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_full_disk_keeps_supervising_and_logs_the_failed_writes(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        config = sidecar_config(tmp_path, free_port())
        with Daemon(config, state) as daemon:
            first = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
            filler = fill(disk)
            os.kill(first, signal.SIGKILL)
            second = daemon.wait_for("sidecar_ready", sidecar="web", count=2)["pid"]
            assert second != first
            # (A removed PID file frees a page, so which write fails first varies.)
            daemon.wait_for("status_write_failed")
            status = handshake(daemon)
            assert sidecar_states(status) == {"web": "ready"}
            assert daemon.proc.poll() is None
            for record in RECORDS:  # whatever is on disk is whole, never torn
                if (state / record).exists():
                    read_json(state / record)
            # Space again: the next write succeeds and the daemon stops cleanly.
            filler.unlink()
            handshake(daemon)
            assert read_json(state / "status.json")["sidecars"][0]["pid"] == second
            assert daemon.stop() == 0
            assert pid_gone(second)


def test_daemon_start_on_a_full_disk_is_a_clear_error(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk") as disk:
        state = disk / "state"
        state.mkdir(mode=0o700)
        fill(disk)
        result = run_cli(
            "run", "-c", str(sidecar_config(tmp_path, free_port())), "--state-dir", str(state)
        )
        assert result.returncode == 2
        assert "supervisor.pid" in one_error_line(result.stderr.splitlines()[-1] + "\n")
        assert "Traceback" not in result.stderr


# -- fuzzed configs --------------------------------------------------------------------------

KEYS = [
    "supervisor", "sidecar", "state_dir", "log_format", "log_level", "exit_with_parent",
    "shutdown_timeout", "name", "command", "cwd", "env", "port", "host", "marker", "ready",
    "probe", "path", "timeout", "interval", "restart", "policy", "max_attempts", "base_delay",
    "max_delay", "reset_after", "stop", "signal", "reclaim", "enabled", "orphan", "live",
    "foreign", "consent", "consent_command", "consent_timeout", "bogus",
]  # fmt: skip
scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=20),
    st.sampled_from(["web", "tcp", "http", "always", "SIGTERM", "kill", "ask", "/", "~", "."]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=12,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def to_toml(doc: dict[str, object]) -> str:
    """Top-level tables and arrays of tables as headers, the rest as inline values."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not _table(v)]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()]
        elif _table(value):
            assert isinstance(value, list)
            for item in value:
                lines.append(f"[[{json.dumps(key)}]]")
                lines += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _table(value: object) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def check_config_answers_cleanly(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["check-config", "-c", str(path)])
    captured = capsys.readouterr()
    assert code in (0, 2), captured
    assert "Traceback" not in captured.err
    if code == 0:
        assert len(captured.out.splitlines()) == 1 and "valid" in captured.out
    else:
        lines = captured.err.splitlines()
        assert lines and all(line.startswith("supervisor: ") for line in lines), captured.err


@FUZZ
@given(doc=documents)
def test_fuzzed_config_structures_get_a_verdict_never_a_traceback(
    doc: dict[str, object], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(to_toml(doc))
    check_config_answers_cleanly(path, capsys)


@FUZZ
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_fuzzed_config_bytes_get_a_verdict_never_a_traceback(
    data: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    check_config_answers_cleanly(path, capsys)


# -- children with pathological output -------------------------------------------------------

LISTEN = """
import os, socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
"""

CHATTY = (
    LISTEN
    + """
line = b"x" * 1000
n = 0
while True:
    n += 1
    os.write(1, b"%d " % n + line + b"\\n")
"""
)

NO_NEWLINES = (
    LISTEN
    + """
chunk = b"y" * 65536
written = 0
while True:
    written += os.write(1, chunk)
    if written % (16 * 1024 * 1024) < 65536:
        os.write(2, b"wrote %d\\n" % written)
"""
)

CLOSES_STDOUT = (
    LISTEN
    + """
os.write(1, b"bye stdout\\n")
os.close(1)
os.close(2)
while True:
    conn, _ = sock.accept()
    conn.close()
"""
)


def test_child_writing_megabytes_per_second_does_not_starve_the_daemon(tmp_path: Path) -> None:
    config = custom_sidecar(tmp_path, CHATTY, free_port())
    state = tmp_path / "state"
    with nothing_written_outside(tmp_path, state), Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
        # 8 MB forwarded line by line: the pipe is drained, not left to fill up and block.
        daemon.wait_for(
            "child_output", sidecar="web", where=lambda e: _counter(e) >= 8000, timeout=60
        )
        for _ in range(3):
            # Each answer comes while the flood goes on (signals are not starved by it), and
            # the flood goes on after each: a later line is forwarded. (Not "a later line
            # between two answers": while the test's reader lags, the daemon's log drops
            # child_output events first, and three quick answers may all fall in such a gap.)
            status = handshake(daemon)
            assert sidecar_states(status) == {"web": "ready"}
            last = _counter(daemon.find("child_output", sidecar="web")[-1])
            later = functools.partial(_counter_above, last)
            daemon.wait_for("child_output", sidecar="web", where=later, timeout=30)
        assert daemon.stop() == 0
    assert pid_gone(pid)


def _counter_above(floor: int, event: dict[str, object]) -> bool:
    return _counter(event) > floor


def _counter(event: dict[str, object]) -> int:
    head = str(event.get("line", "")).split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


def test_child_writing_no_newlines_is_capped_and_drained(tmp_path: Path) -> None:
    config = custom_sidecar(tmp_path, NO_NEWLINES, free_port())
    state = tmp_path / "state"
    with nothing_written_outside(tmp_path, state), Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="web")
        daemon.wait_for(
            "child_output",
            sidecar="web",
            stream="stderr",
            where=lambda e: (
                str(e["line"]).startswith("wrote ")
                and int(str(e["line"]).split()[1]) >= 64 * 1024 * 1024
            ),
            timeout=30,
        )
        truncated = daemon.find("child_output", sidecar="web", stream="stdout", truncated=True)
        assert len(truncated) == 1 and len(str(truncated[0]["line"])) == 8192
        rss_mib = psutil.Process(daemon.pid).memory_info().rss / 2**20
        assert rss_mib < 150, f"daemon RSS {rss_mib:.0f} MiB after 64 MiB without a newline"
        status = handshake(daemon)
        assert sidecar_states(status) == {"web": "ready"}
        assert daemon.stop() == 0


def test_child_closing_its_output_early_stays_supervised(tmp_path: Path) -> None:
    config = custom_sidecar(tmp_path, CLOSES_STDOUT, free_port())
    state = tmp_path / "state"
    with nothing_written_outside(tmp_path, state), Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready", sidecar="web")["pid"]
        daemon.wait_for("child_output", sidecar="web", line="bye stdout")
        status = handshake(daemon)
        assert sidecar_states(status) == {"web": "ready"}
        assert not daemon.find("sidecar_exited")
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert daemon.stop() == 0
        stopped = daemon.wait_for("sidecar_stopped", sidecar="web")
        assert stopped["pid"] == pid
    assert pid_gone(pid)
