"""The console format for a person: a table of events and the one line each becomes."""

from __future__ import annotations

import re

import pytest

from supervisor.core import console

T = "12:04:31"


def ev(
    event: str, sidecar: str | None = "api", level: str = "info", **facts: object
) -> dict[str, object]:
    found: dict[str, object] = {"event": event, "level": level, "timestamp": T, **facts}
    if sidecar is not None:
        found["sidecar"] = sidecar
    return found


CASES = [
    (
        ev("sidecar_ready", pid=7, elapsed_ms=38.2, url="http://127.0.0.1:8080/health"),
        "12:04:31  api         ready         http://127.0.0.1:8080/health  (38 ms)",
    ),
    (
        ev("sidecar_spawned", pid=7843, attempt=0, interactive=True),
        "12:04:31  api         started       pid 7843",
    ),
    (
        ev("sidecar_spawned", pid=7843, attempt=2, interactive=False),
        "12:04:31  api         started       pid 7843  attempt 2",
    ),
    (
        ev("sidecar_exited", pid=7, code=1, signal=None),
        "12:04:31  api         exited        exit code 1  pid 7",
    ),
    (
        ev("sidecar_exited", pid=7, code=None, signal="SIGKILL"),
        "12:04:31  api         exited        killed by SIGKILL  pid 7",
    ),
    (ev("sidecar_stopped", pid=None, escalated=False), "12:04:31  api         stopped"),
    (
        ev("sidecar_stopped", pid=9, escalated=True),
        "12:04:31  api         stopped       pid 9  (had to SIGKILL)",
    ),
    (
        ev("restart_scheduled", attempt=2, max_attempts=5, delay_s=2.0),
        "12:04:31  api         restarting    in 2 s  (attempt 2 of 5)",
    ),
    (
        ev("restart_budget_exhausted", attempts=5, max_attempts=5),
        "12:04:31  api         gave up       after 5 attempts; not restarting",
    ),
    (
        ev("sidecar_start_failed", level="error", reason="command not found: pyhton3"),
        "12:04:31  api         failed        command not found: pyhton3",
    ),
    (
        ev("sidecar_waiting", port=80, holder_pid=None, verdict=None, reason="port 80 is held"),
        "12:04:31  api         waiting       port 80 is held",
    ),
    (
        ev("daemon_started", sidecar=None, pid=5, sidecars=["a", "b"], config="/c.toml"),
        "12:04:31  supervisor  started       2 sidecars  pid 5",
    ),
    (ev("daemon_stopped", sidecar=None, pid=5), "12:04:31  supervisor  stopped       pid 5"),
    (
        ev("config_reloaded", sidecar=None, added=["b"], removed=[], changed=["a"], unchanged=[]),
        "12:04:31  supervisor  reloaded      added b  changed a",
    ),
    (
        ev("health_check_failed", reason="HTTP 500", failures=2),
        "12:04:31  api         health check  HTTP 500  (2 in a row)",
    ),
    (
        ev("live_holder_left", port=8080, pid=42),
        "12:04:31  api         left running  port 8080  pid 42",
    ),
    (
        ev(
            "foreign_holder_left",
            level="warning",
            port=80,
            pid=7,
            user="www",
            uid=33,
            reason="another user's process",
        ),
        "12:04:31  api         not ours      port 80  pid 7  www  another user's process",
    ),
    (
        ev("log_lines_dropped", sidecar=None, level="warning", count=12, total=40),
        "12:04:31  supervisor  lost lines    12 lines lost",
    ),
    # An event the console has no words for: its name and its facts, never a None.
    (
        ev("something_new", sidecar=None, count=3, path=None, note=""),
        "12:04:31  supervisor  something new  count=3",
    ),
    (
        ev("child_output", stream="stdout", line="listening on 127.0.0.1:8080"),
        "12:04:31  api         | listening on 127.0.0.1:8080",
    ),
    (
        ev("child_output", stream="stderr", line="Traceback\t(most recent call last):"),
        "12:04:31  api         ! Traceback (most recent call last):",
    ),
]


@pytest.mark.parametrize(("event", "line"), CASES)
def test_event_becomes_one_line(event: dict[str, object], line: str) -> None:
    assert console.render(event) == line


@pytest.mark.parametrize(("event", "line"), CASES)
def test_no_line_says_none_or_is_wider_than_asked(event: dict[str, object], line: str) -> None:
    del line
    for width in (40, 80, 160, 500):
        text = console.render(event, width=width)
        assert "\n" not in text and "None" not in text
        if event["event"] != "child_output":  # the child's words are never cut
            assert len(text) <= max(40, min(width, console.MAX_WIDTH))


def test_long_facts_and_names_are_cut_with_an_ellipsis() -> None:
    event = ev(
        "sidecar_start_failed", sidecar="a-very-long-sidecar-name", reason="x" * 500, level="error"
    )
    text = console.render(event, width=80)
    assert len(text) == 80 and text.endswith("…")
    assert "a-very-lo…" in text


def test_columns_align_across_events() -> None:
    lines = [console.render(e) for e, _ in CASES if e["event"] != "child_output"]
    starts = {re.match(r"\S+  \S+\s+", line).end() for line in lines}  # type: ignore[union-attr]
    assert starts == {8 + 2 + console.NAME_WIDTH + 2}


def test_colours_only_when_asked() -> None:
    event = ev("sidecar_start_failed", level="error", reason="boom")
    assert "\x1b[" not in console.render(event)
    coloured = console.render(event, colours=True, names=["web", "api"])
    assert "\x1b[31m" in coloured  # errors in red
    assert console.colour_of("api", ["web", "api"]) in coloured


@pytest.mark.parametrize("name", sorted(console.BOOKKEEPING))
def test_bookkeeping_is_shown_only_at_debug(name: str) -> None:
    assert not console.shown(ev(name), debug=False)
    assert console.shown(ev(name), debug=True)
    assert console.shown(ev("sidecar_ready"), debug=False)


def _summary() -> console.Summary:
    return console.Summary(hint=lambda config: [f"next: {config}"])


def test_summary_once_every_first_launch_settled() -> None:
    summary = _summary()
    started = ev("daemon_started", sidecar=None, sidecars=["api", "web", "bad"], config="c.toml")
    assert summary.feed(started) == []
    assert summary.feed(ev("sidecar_ready", sidecar="api", url="u")) == []
    assert summary.feed(ev("child_output", sidecar="web", line="x")) == []
    assert summary.feed(ev("sidecar_start_failed", sidecar="bad", reason="not found: x")) == []
    assert summary.feed(ev("sidecar_ready", sidecar="web")) == [
        "2/3 ready",
        "  bad: start failed: not found: x",
        "next: c.toml",
    ]
    # Said once: later events (a restart, a second ready) say nothing more.
    assert summary.feed(ev("sidecar_ready", sidecar="bad")) == []
    assert summary.feed(ev("sidecar_exited", sidecar="api", code=1)) == []


def test_summary_all_ready_and_no_sidecars() -> None:
    summary = _summary()
    summary.feed(ev("daemon_started", sidecar=None, sidecars=["a"], config="c"))
    assert summary.feed(ev("sidecar_ready", sidecar="a")) == ["1/1 ready", "next: c"]
    empty = _summary()
    assert empty.feed(ev("daemon_started", sidecar=None, sidecars=[], config="c")) == [
        "0/0 ready",
        "next: c",
    ]


def test_summary_says_why_a_sidecar_is_not_ready() -> None:
    summary = _summary()
    summary.feed(ev("daemon_started", sidecar=None, sidecars=["a", "b"], config="c"))
    summary.feed(ev("sidecar_exited", sidecar="a", code=3, signal=None))
    lines = summary.feed(ev("sidecar_waiting", sidecar="b", reason="port 80 is held by pid 9"))
    assert lines == [
        "0/2 ready",
        "  a: exited (3) before it was ready",
        "  b: waiting: port 80 is held by pid 9",
        "next: c",
    ]


def test_no_summary_after_a_shutdown_began() -> None:
    summary = _summary()
    summary.feed(ev("daemon_started", sidecar=None, sidecars=["a", "b"], config="c"))
    summary.feed(ev("sidecar_ready", sidecar="a"))
    assert summary.feed(ev("daemon_stopping", sidecar=None, reason="SIGTERM")) == []
    assert summary.feed(ev("sidecar_stopped", sidecar="b")) == []


def test_next_steps_name_the_config() -> None:
    lines = console.next_steps("/my configs/s.toml")
    assert "supervisor status -c '/my configs/s.toml'" in lines[0]
    assert "supervisor logs -c '/my configs/s.toml' -f" in lines[1]
    assert "Ctrl-C" in lines[-1] and all(len(line) < 100 for line in lines)
