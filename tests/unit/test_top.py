"""`top` and `status`: the rows they show, CPU and memory, what a sidecar waits for."""

from __future__ import annotations

import pytest

from supervisor.cli import top
from supervisor.core import status
from supervisor.system.procs import Usage

NOW = 1_800_000_000.0
SINCE = status.iso_utc(NOW - 65)

DOC: dict[str, object] = {
    "supervisor": {"pid": 10, "config": "/c.toml", "started_at": status.iso_utc(NOW - 3700)},
    "sidecars": [
        {"name": "api", "state": "ready", "pid": 11, "url": "http://127.0.0.1:8080/health",
         "restarts": 2, "since": SINCE, "reason": None},
        {"name": "db", "state": "starting", "pid": None, "url": "tcp://127.0.0.1:5432",
         "restarts": 0, "since": SINCE,
         "reason": "waiting for your answer in the terminal (kill pid 99?)"},
        {"name": "worker", "state": "ready", "pid": 12, "url": None, "restarts": 0,
         "since": SINCE, "cpu_percent": 37.5, "memory_bytes": 3 << 30},
    ],
}  # fmt: skip


def test_rows_carry_usage_uptime_and_what_a_sidecar_waits_for() -> None:
    usage = {11: Usage(cpu_percent=1.25, memory_bytes=40 << 20), 12: Usage(99.0, 1)}
    api, db, worker = top.rows(DOC, usage, {"api": "GET /health 200", "db": "x"}, NOW)
    assert (api.state, api.pid, api.uptime, api.cpu, api.memory) == (
        "ready", "11", "1m5s", "1.2%", "40.0M"
    )  # fmt: skip
    assert api.detail == "last: GET /health 200"
    assert db.detail == "why: waiting for your answer in the terminal (kill pid 99?)"
    assert (db.pid, db.uptime, db.cpu) == ("-", "-", "-")
    # The daemon's own numbers (cgroups) win over a sample taken by the client.
    assert (worker.cpu, worker.memory, worker.url) == ("38%", "3.0G", "-")


def test_render_fits_the_width_and_marks_the_selection() -> None:
    table = top.rows(DOC, {}, {}, NOW)
    narrow = top.render(table, top.title_of(DOC, NOW), 70, selected=1, message="")
    assert all(len(line) <= 70 for line in narrow)
    lines = top.render(table, top.title_of(DOC, NOW), 120, selected=1, message="")
    assert lines[0].startswith("supervisor pid 10  up 1h1m  2/3 ready")
    assert lines[2].split() == ["NAME", "STATE", "PID", "URL", "RESTARTS", "UPTIME", "CPU", "MEM"]
    assert lines[5].startswith("> db ") and lines[3].startswith("  api ")
    assert lines[6].startswith("    why: waiting for your answer in the terminal")
    assert lines[-1] == top.KEYS
    assert "None" not in "\n".join(lines)


def test_render_without_sidecars() -> None:
    lines = top.render([], "t", 80, selected=0, message="stopping api…")
    assert "  no sidecars configured" in lines and lines[-1] == "stopping api…"


@pytest.mark.parametrize(
    ("value", "cpu", "memory"),
    [
        (None, "-", "-"),
        (0, "0.0%", "0B"),
        (512, "512%", "512B"),
        (2048, "2048%", "2.0K"),
        (150 << 20, "157286400%", "150M"),
        (True, "-", "-"),
        ("12", "-", "-"),
    ],
)
def test_cpu_and_memory_texts(value: object, cpu: str, memory: str) -> None:
    assert status.cpu_text(value) == cpu
    assert status.memory_text(value) == memory


def test_status_table_has_cpu_and_memory_columns() -> None:
    table = status.render_table(DOC, NOW).splitlines()
    assert table[1].split()[:7] == ["NAME", "STATE", "PID", "PORT", "UPTIME", "CPU", "MEM"]
    worker = table[4].split()
    assert worker[:7] == ["worker", "ready", "12", "-", "1m5s", "38%", "3.0G"]
    assert table[3].endswith("waiting for your answer in the terminal (kill pid 99?)")
