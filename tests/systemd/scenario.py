"""The systemd scenario, run as the throwaway user inside real-systemd's container.

Drives `sidecar-supervisor.service` through install, start, reload, stop, a slow start, a config
error, kill -9 and the watchdog, and prints one JSON object per check on stdout (`{"check": ...}`)
for test_real_systemd.py to assert on. Stdlib only; every wait is a bounded poll on a handshake
(a `systemctl show` property, a port answering, a file appearing).

    scenario.py --venv DIR      (DIR: a venv with sidecar-supervisor installed)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

UNIT = "sidecar-supervisor"
DEMO_PORT = 22050  # the container has its own network namespace: fixed ports are safe
SLOW_PORT = 22051
SECOND_PORT = 22052
SLOW_LISTEN_DELAY_S = 3.0
READY_TIMEOUT_S = 20.0  # the sidecars' ready.timeout, and our bound on "eventually serves"
WATCHDOG_S = 2
WATCHDOG_PERIODS_OBSERVED = 3

HOME = Path(os.environ.get("HOME", "/home/sdtest"))
CONFIG = HOME / "cfg" / "supervisor.toml"
STATE = HOME / "state"
SLOW_SCRIPT = HOME / "slow_sidecar.py"
SLOW_REPORT = HOME / "slow.listened"
UNIT_FILE = HOME / ".config" / "systemd" / "user" / f"{UNIT}.service"
DROP_IN = HOME / ".config" / "systemd" / "user" / f"{UNIT}.service.d" / "watchdog.conf"

# A sidecar that needs 3 s (by the monotonic clock) before it listens, then answers any request
# with 200; it reports "SPAWNED LISTENED" (monotonic seconds) once it listens.
SLOW_SIDECAR = """\
import socket, sys, time
port, report = int(sys.argv[1]), sys.argv[2]
spawned = time.monotonic()
while time.monotonic() < spawned + DELAY:
    time.sleep(spawned + DELAY - time.monotonic())
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(16)
listened = time.monotonic()
with open(report + ".tmp", "w") as f:
    f.write(f"{spawned} {listened}\\n")
import os; os.rename(report + ".tmp", report)
ANSWER = b"HTTP/1.0 200 OK\\r\\nContent-Length: 3\\r\\nConnection: close\\r\\n\\r\\nok\\n"
while True:
    conn, _ = server.accept()
    with conn:
        try:
            conn.settimeout(2.0)
            conn.recv(4096)
            conn.sendall(ANSWER)
        except OSError:
            pass
""".replace("DELAY", repr(SLOW_LISTEN_DELAY_S))

T = TypeVar("T")


# -- plumbing ------------------------------------------------------------------------------------


def emit(check: str, **fields: object) -> None:
    print(json.dumps({"check": check, **fields}, default=str), flush=True)


@contextlib.contextmanager
def phase(check: str) -> Iterator[dict[str, object]]:
    """Collects one check's fields and emits them, with the traceback if the phase broke."""
    # CLOCK_MONOTONIC, the clock of `journalctl -o short-monotonic`: the test shows the
    # journal lines of this phase only.
    fields: dict[str, object] = {"began_at": time.monotonic()}
    try:
        yield fields
    except Exception:
        fields["error"] = traceback.format_exc()
    fields["ended_at"] = time.monotonic()
    emit(check, **fields)


@dataclass(frozen=True)
class Ran:
    rc: int
    out: str
    err: str
    elapsed_s: float


def run(argv: Sequence[str], timeout_s: float = 60.0) -> Ran:
    started = time.monotonic()
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return Ran(-1, str(exc.stdout or ""), f"timed out after {timeout_s} s", timeout_s)
    return Ran(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def systemctl(*args: str, timeout_s: float = 120.0) -> Ran:
    return run(["systemctl", "--user", *args], timeout_s)


def show(*props: str) -> dict[str, str]:
    ran = systemctl("show", "-p", ",".join(props), UNIT, timeout_s=30.0)
    return dict(line.split("=", 1) for line in ran.out.splitlines() if "=" in line)


_SPAN_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "min": 60_000_000, "h": 3_600_000_000}


def timespan_us(text: str) -> int:
    """systemd's rendering of a time span ("2s", "1min 30s", "100ms") in microseconds."""
    words = re.findall(r"(\d+)\s*(us|ms|min|s|h)\b", text)
    if not words:
        raise ValueError(f"not a time span: {text!r}")
    return sum(int(number) * _SPAN_UNITS_US[unit] for number, unit in words)


def prop_int(name: str) -> int:
    try:
        return int(show(name).get(name, ""))
    except ValueError:
        return -1


def poll(probe: Callable[[], T | None], timeout_s: float, interval_s: float = 0.05) -> T | None:
    """`probe()` until it returns something other than None, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)  # the cadence of a bounded poll, not a synchronisation


def get(port: int, path: str = "/health", timeout_s: float = 2.0) -> int | str:
    """The HTTP status of one GET, or the error that prevented it (e.g. connection refused)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def serving(port: int) -> int | None:
    return 200 if get(port) == 200 else None


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sidecar_toml(name: str, command: Sequence[str], port: int, marker: str | None = None) -> str:
    lines = [
        "[[sidecar]]",
        f"name = {json.dumps(name)}",
        f"command = {json.dumps(list(command))}",
        f"port = {port}",
    ]
    if marker is not None:
        lines.append(f"marker = {json.dumps(marker)}")
    lines += [
        "",
        "[sidecar.ready]",
        'probe = "http"',
        'path = "/health"',
        f"timeout = {READY_TIMEOUT_S}",
        "",
    ]
    return "\n".join(lines)


def write_config(sidecars: Sequence[str], extra_supervisor: str = "") -> None:
    head = (
        "[supervisor]\n"
        f"state_dir = {json.dumps(str(STATE))}\n"
        'log_format = "json"\n'
        'log_level = "info"\n'
        f"{extra_supervisor}\n"
    )
    write_atomically(CONFIG, head + "\n".join(sidecars))


def demo(python: Path, name: str = "demo", port: int = DEMO_PORT) -> str:
    argv = [str(python), "-m", "supervisor.demo", "--port", str(port)]
    return sidecar_toml(name, argv, port, marker=f"supervisor.demo --port {port}")


def status_doc(venv: Path) -> dict[str, object] | None:
    ran = run([str(venv / "bin" / "supervisor"), "status", "--json", "--state-dir", str(STATE)])
    if ran.rc != 0:
        return None
    try:
        doc = json.loads(ran.out)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def status_file() -> dict[str, object] | None:
    """`status.json` as it is now (what `supervisor status` shows, without its start-up time)."""
    try:
        doc = json.loads((STATE / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def watchdog_timeouts() -> int:
    ran = run(["journalctl", "--user", "-u", UNIT, "--no-pager", "-o", "cat"])
    return sum("Watchdog timeout" in line for line in ran.out.splitlines())


def sidecar_record(doc: Mapping[str, object] | None, name: str) -> dict[str, object] | None:
    sidecars = doc.get("sidecars") if doc is not None else None
    if not isinstance(sidecars, list):
        return None
    for record in sidecars:
        if isinstance(record, dict) and record.get("name") == name:
            return record
    return None


def cgroup_procs(control_group: str) -> list[int] | str:
    """The pids in the unit's cgroup and every cgroup below it (the daemon's leaf and its
    sidecars' cgroups: Delegate=yes); [] once systemd removed it, or why it can't be read."""
    if not control_group:
        return "no ControlGroup"
    top = Path("/sys/fs/cgroup") / control_group.lstrip("/")
    pids: list[int] = []
    try:
        for folder, _, files in os.walk(top):
            if "cgroup.procs" in files:
                pids += [int(word) for word in (Path(folder) / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return sorted(pids)


def cgroup_of(pid: object) -> str | None:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    lines = [line[3:] for line in text.splitlines() if line.startswith("0::")]
    return lines[0] if lines else None


def processes_matching(*needles: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def stop_unit() -> Ran:
    ran = systemctl("stop", UNIT)
    systemctl("reset-failed", UNIT)
    return ran


def restarted_from(old_main: int, restarts_before: int) -> Callable[[], dict[str, str] | None]:
    """A probe: the unit's properties once it runs again under a new MainPID after a restart."""

    def probe() -> dict[str, str] | None:
        props = show("ActiveState", "SubState", "MainPID", "NRestarts")
        try:
            main, restarts = int(props["MainPID"]), int(props["NRestarts"])
        except (KeyError, ValueError):
            return None
        if props.get("ActiveState") == "active" and main not in (0, old_main):
            return props if restarts > restarts_before else None
        return None

    return probe


# -- the checks ----------------------------------------------------------------------------------


def check_install(venv: Path) -> None:
    with phase("install") as out:
        write_config([demo(venv / "bin" / "python")])
        ran = run([str(venv / "bin" / "supervisor"), "service", "install", "-c", str(CONFIG)])
        out.update(rc=ran.rc, stdout=ran.out, stderr=ran.err, unit_file=str(UNIT_FILE))
        out["unit_text"] = UNIT_FILE.read_text() if UNIT_FILE.exists() else None
        out["daemon_reload_rc"] = systemctl("daemon-reload").rc
        out["props"] = show(
            "LoadState",
            "FragmentPath",
            "Type",
            "NotifyAccess",
            "ExecStart",
            "ExecReload",
            "KillMode",
            "Restart",
            "RestartPreventExitStatus",
            "TimeoutStopUSec",
        )
        out["venv_python"] = str(venv / "bin" / "python")
        out["config"] = str(CONFIG)


def check_start() -> None:
    with phase("start") as out:
        started = time.monotonic()
        ran = systemctl("start", UNIT)
        returned = time.monotonic()
        out["health_at_return"] = get(DEMO_PORT)  # first, at once: nothing else in between
        out["status_text_at_return"] = show("StatusText").get("StatusText")
        out.update(rc=ran.rc, stderr=ran.err, elapsed_s=returned - started)
        out["active_state"] = show("ActiveState").get("ActiveState")
        out["serves_eventually"] = poll(lambda: serving(DEMO_PORT), READY_TIMEOUT_S) == 200

        def ready_status() -> str | None:
            text = show("StatusText").get("StatusText", "")
            return text if "demo: ready" in text else None

        out["status_text_ready"] = poll(ready_status, 10.0)
        out["status_text_last"] = show("StatusText").get("StatusText")


def check_reload(venv: Path) -> None:
    with phase("reload") as out:
        python = venv / "bin" / "python"
        before = sidecar_record(status_doc(venv), "demo")
        out["demo_before"] = before
        out["main_pid_before"] = prop_int("MainPID")
        out["exec_reload"] = show("ExecReload").get("ExecReload")
        write_config([demo(python), demo(python, "second", SECOND_PORT)])
        started = time.monotonic()
        ran = systemctl("reload", UNIT)
        returned = time.monotonic()
        # At once, in this order: the status file as the daemon last wrote it, then the port;
        # `supervisor status` (a Python start-up later) only after.
        raw = status_file()
        out["second_health_at_return"] = get(SECOND_PORT)
        out["second_in_status_file_at_return"] = sidecar_record(raw, "second")
        doc = status_doc(venv)
        out.update(rc=ran.rc, stderr=ran.err, elapsed_s=returned - started)
        out["second_in_status_cli_after_return"] = sidecar_record(doc, "second")
        out["demo_after_return"] = sidecar_record(doc, "demo")
        out["main_pid_after"] = prop_int("MainPID")

        def second_ready() -> dict[str, object] | None:
            record = sidecar_record(status_doc(venv), "second")
            ok = record is not None and record.get("state") == "ready"
            return record if ok and serving(SECOND_PORT) else None

        out["second_eventually"] = poll(second_ready, READY_TIMEOUT_S, 0.1)
        out["demo_eventually"] = sidecar_record(status_doc(venv), "demo")


def check_stop() -> None:
    with phase("stop") as out:
        props = show("ControlGroup", "MainPID")
        control_group = props.get("ControlGroup", "")
        out["control_group"] = control_group
        out["main_pid"] = props.get("MainPID")
        out["procs_before"] = cgroup_procs(control_group)
        out["daemon_cgroup"] = cgroup_of(props.get("MainPID"))
        doc = status_file()
        sidecars = doc.get("sidecars") if doc else None
        out["sidecar_cgroups"] = {
            str(r.get("name")): [r.get("isolation"), cgroup_of(r.get("pid"))]
            for r in (sidecars if isinstance(sidecars, list) else [])
            if isinstance(r, dict)
        }
        ran = systemctl("stop", UNIT)
        out.update(rc=ran.rc, stderr=ran.err, elapsed_s=ran.elapsed_s)
        out["procs_after"] = cgroup_procs(control_group)
        out["cgroup_dir_exists_after"] = (
            Path("/sys/fs/cgroup") / control_group.lstrip("/")
        ).exists()
        out["leftover_processes"] = processes_matching("supervisor.demo", "supervisor run")
        out["health_after"] = {str(p): get(p) for p in (DEMO_PORT, SECOND_PORT)}
        out["props_after"] = show(
            "ActiveState", "SubState", "Result", "ExecMainStatus", "ExecMainCode", "TasksCurrent"
        )
        systemctl("reset-failed", UNIT)


def check_slow_start(venv: Path) -> None:
    with phase("slow_start") as out:
        SLOW_SCRIPT.write_text(SLOW_SIDECAR)
        SLOW_REPORT.unlink(missing_ok=True)
        argv = [str(venv / "bin" / "python"), str(SLOW_SCRIPT), str(SLOW_PORT), str(SLOW_REPORT)]
        write_config([sidecar_toml("slow", argv, SLOW_PORT)])
        started = time.monotonic()
        ran = systemctl("start", UNIT)
        returned = time.monotonic()
        out["health_at_return"] = get(SLOW_PORT)
        out.update(rc=ran.rc, stderr=ran.err, elapsed_s=returned - started)
        out["started_at"], out["returned_at"] = started, returned
        out["active_state"] = show("ActiveState").get("ActiveState")
        out["status_text_at_return"] = show("StatusText").get("StatusText")
        report = poll(
            lambda: SLOW_REPORT.read_text() if SLOW_REPORT.exists() else None, READY_TIMEOUT_S
        )
        if report is not None:
            spawned, listened = (float(word) for word in report.split())
            out["sidecar_spawned_at"], out["sidecar_listened_at"] = spawned, listened
        out["serves_eventually"] = poll(lambda: serving(SLOW_PORT), READY_TIMEOUT_S) == 200
        out["stop_rc"] = stop_unit().rc


def check_config_error(venv: Path) -> None:
    with phase("config_error") as out:
        stop_unit()
        write_config([demo(venv / "bin" / "python")], extra_supervisor="no_such_key = true")
        checked = run([str(venv / "bin" / "supervisor"), "check-config", "-c", str(CONFIG)])
        out["check_config_rc"] = checked.rc
        restart_delay_us = timespan_us(show("RestartUSec").get("RestartUSec", ""))
        out["restart_delay_us"] = restart_delay_us
        out["n_restarts_before"] = prop_int("NRestarts")
        ran = systemctl("start", UNIT)
        out.update(rc=ran.rc, stderr=ran.err)
        props = ("ActiveState", "SubState", "Result", "ExecMainStatus", "ExecMainCode", "NRestarts")
        out["props_at_return"] = show(*props)
        # A restart would come RestartSec after the exit: watch a little longer than that for
        # one (not a synchronisation: there is no event for "nothing happened").
        seen: set[str] = set()
        restarts: set[int] = set()

        def restart_seen() -> bool | None:
            now = show("ActiveState", "SubState", "NRestarts")
            seen.add(f"{now.get('ActiveState')}/{now.get('SubState')}")
            with contextlib.suppress(ValueError):
                restarts.add(int(now.get("NRestarts", "")))
            return True if now.get("ActiveState") in ("active", "activating") else None

        window_s = restart_delay_us / 1e6 + 1.0
        out["restart_seen"] = bool(poll(restart_seen, window_s, 0.1))
        out["states_seen"] = sorted(seen)
        out["n_restarts_seen"] = sorted(restarts)
        out["props_after_window"] = show(*props)
        stop_unit()


def check_kill9(venv: Path) -> None:
    with phase("kill9") as out:
        write_config([demo(venv / "bin" / "python")])
        ran = systemctl("start", UNIT)
        out["start_rc"] = ran.rc
        out["served_before"] = poll(lambda: serving(DEMO_PORT), READY_TIMEOUT_S) == 200
        main, restarts = prop_int("MainPID"), prop_int("NRestarts")
        out["main_pid_before"], out["n_restarts_before"] = main, restarts
        os.kill(main, signal.SIGKILL)
        killed = time.monotonic()
        after = poll(restarted_from(main, restarts), 30.0, 0.1)
        out["restarted"] = after
        out["restart_after_s"] = time.monotonic() - killed
        out["props_after"] = show("ActiveState", "SubState", "MainPID", "NRestarts", "Result")
        out["serves_again"] = poll(lambda: serving(DEMO_PORT), READY_TIMEOUT_S) == 200
        stop_unit()


def check_watchdog(venv: Path) -> None:
    with phase("watchdog_alive") as alive:
        write_config([demo(venv / "bin" / "python")])
        # LimitCORE=0: the watchdog's SIGABRT would otherwise dump a core into the tmpfs.
        write_atomically(DROP_IN, f"[Service]\nWatchdogSec={WATCHDOG_S}\nLimitCORE=0\n")
        alive["daemon_reload_rc"] = systemctl("daemon-reload").rc
        alive["start_rc"] = systemctl("start", UNIT).rc
        alive["watchdog_usec"] = show("WatchdogUSec").get("WatchdogUSec")
        alive["served"] = poll(lambda: serving(DEMO_PORT), READY_TIMEOUT_S) == 200
        main, restarts = prop_int("MainPID"), prop_int("NRestarts")
        alive["main_pid"], alive["n_restarts_before"] = main, restarts
        mains: set[int] = set()
        counts: set[int] = set()

        def changed() -> bool | None:
            mains.add(prop_int("MainPID"))
            counts.add(prop_int("NRestarts"))
            return True if mains != {main} or counts != {restarts} else None

        # Several watchdog periods: a daemon that forgot WATCHDOG=1 is killed within one.
        alive["changed"] = bool(poll(changed, WATCHDOG_S * WATCHDOG_PERIODS_OBSERVED, 0.2))
        alive["main_pids_seen"], alive["n_restarts_seen"] = sorted(mains), sorted(counts)
        alive["observed_s"] = WATCHDOG_S * WATCHDOG_PERIODS_OBSERVED
        alive["watchdog_timeouts_logged"] = watchdog_timeouts()
    with phase("watchdog_restart") as out:
        main, restarts = prop_int("MainPID"), prop_int("NRestarts")
        out["main_pid_before"], out["n_restarts_before"] = main, restarts
        os.kill(main, signal.SIGSTOP)
        stopped = time.monotonic()
        # Watchdog timeout, then SIGABRT (TimeoutAbortSec, else SIGKILL), then RestartSec.
        out["restarted"] = poll(restarted_from(main, restarts), 60.0, 0.1)
        out["restart_after_s"] = time.monotonic() - stopped
        out["props_after"] = show("ActiveState", "SubState", "MainPID", "NRestarts", "Result")
        out["serves_again"] = poll(lambda: serving(DEMO_PORT), READY_TIMEOUT_S) == 200
        out["watchdog_timeouts_logged"] = watchdog_timeouts()
        stop_unit()  # systemd sends SIGCONT along with SIGTERM, should it still be stopped
        DROP_IN.unlink(missing_ok=True)
        systemctl("daemon-reload")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", type=Path, required=True)
    args = parser.parse_args(argv)
    venv: Path = args.venv
    os.chdir(HOME)
    check_install(venv)
    check_start()
    check_reload(venv)
    check_stop()
    check_slow_start(venv)
    check_config_error(venv)
    check_kill9(venv)
    check_watchdog(venv)
    journal = run(["journalctl", "--user", "-u", UNIT, "--no-pager", "-o", "short-monotonic"])
    emit("journal", rc=journal.rc, text=journal.out[-30000:], stderr=journal.err)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
