"""The control protocol's pure parts: request parsing, replies, events, urls, hints."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from supervisor import errors
from supervisor.config import ProbeKind, ReadyConfig, SidecarConfig
from supervisor.control import client, events, protocol
from supervisor.control.protocol import Command, ErrorCode, ProtocolError
from supervisor.core import status
from supervisor.core.lifecycle import State
from supervisor.core.status import Details, LastExit, SidecarRecord
from supervisor.evidence import tags


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"cmd": "status"}', protocol.Request(None, Command.STATUS, ())),
        (b'{"id": 7, "cmd": "status", "names": ["a"]}',
         protocol.Request(7, Command.STATUS, ("a",))),
        (b'{"id": "x", "cmd": "subscribe"}', protocol.Request("x", Command.SUBSCRIBE, ())),
        (b'{"id": 1.5, "cmd": "start", "names": ["a", "b", "a"]}',
         protocol.Request(1.5, Command.START, ("a", "b"))),
        (b'{"id": null, "cmd": "stop", "names": ["a"]}',
         protocol.Request(None, Command.STOP, ("a",))),
        (b'  {"cmd": "restart", "names": ["a"]}  ',
         protocol.Request(None, Command.RESTART, ("a",))),
    ],
)  # fmt: skip
def test_valid_requests(line: bytes, expected: protocol.Request) -> None:
    assert protocol.parse_request(line) == expected


@pytest.mark.parametrize(
    ("line", "code", "request_id"),
    [
        (b"", ErrorCode.BAD_REQUEST, None),
        (b"nope", ErrorCode.BAD_REQUEST, None),
        (b'"status"', ErrorCode.BAD_REQUEST, None),
        (b"[]", ErrorCode.BAD_REQUEST, None),
        (b"[" * 10000, ErrorCode.BAD_REQUEST, None),
        (b'{"id": true, "cmd": "status"}', ErrorCode.BAD_REQUEST, None),
        (b'{"id": [1], "cmd": "status"}', ErrorCode.BAD_REQUEST, None),
        (b'{"id": 3}', ErrorCode.BAD_REQUEST, 3),
        (b'{"id": 3, "cmd": "Status"}', ErrorCode.UNKNOWN_COMMAND, 3),
        (b'{"id": 3, "cmd": "status", "extra": 1}', ErrorCode.BAD_REQUEST, 3),
        (b'{"id": 3, "cmd": "status", "names": "a"}', ErrorCode.BAD_REQUEST, 3),
        (b'{"id": 3, "cmd": "status", "names": [null]}', ErrorCode.BAD_REQUEST, 3),
        (b'{"id": 3, "cmd": "stop"}', ErrorCode.BAD_REQUEST, 3),
        (b'{"id": 3, "cmd": "start", "names": []}', ErrorCode.BAD_REQUEST, 3),
        (b'{"id": 3, "cmd": "status", "names": ' + json.dumps(["a"] * 1025).encode() + b"}",
         ErrorCode.BAD_REQUEST, 3),
        (b" " * (protocol.MAX_REQUEST_BYTES + 1), ErrorCode.TOO_LARGE, None),
        (b"\xff\xfe", ErrorCode.BAD_REQUEST, None),
    ],
)  # fmt: skip
def test_invalid_requests(line: bytes, code: ErrorCode, request_id: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_request(line)
    assert caught.value.code is code
    reply = caught.value.reply()
    assert reply["ok"] is False and reply["id"] == request_id
    error = reply["error"]
    assert isinstance(error, dict) and error["code"] == code.value and error["message"]


@pytest.mark.parametrize(
    "line",
    [
        b'{"cmd": "status", "cmd": "stop", "names": ["a"]}',
        b'{"id": 1, "id": 2, "cmd": "status"}',
        b'{"cmd": "status", "names": ["a"], "names": ["b"]}',
        b'{"id": 1e999, "cmd": "status"}',
        b'{"id": -1e999, "cmd": "status"}',
        b'{"id": NaN, "cmd": "status"}',
        b'{"id": Infinity, "cmd": "status"}',
        b'{"id": -Infinity, "cmd": "status"}',
        b'{"cmd": "status", "names": [], "x": {"a": 1, "a": 2}}',
    ],
)
def test_duplicate_keys_and_non_finite_numbers_are_rejected_never_echoed(line: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_request(line)
    assert caught.value.code is ErrorCode.BAD_REQUEST
    reply = caught.value.reply()
    assert reply["id"] is None  # nothing of the ambiguous request is echoed
    encoded = protocol.encode(reply)
    # A strict parser takes the reply: no NaN/Infinity token anywhere in it.
    json.loads(encoded, parse_constant=lambda c: pytest.fail(f"{c} on the wire"))


def test_replies_and_encoding() -> None:
    assert json.loads(protocol.encode(protocol.ok_reply(1, {"a": "é"}))) == {
        "id": 1,
        "ok": True,
        "result": {"a": "é"},
    }
    line = protocol.encode(protocol.error_reply("x", ErrorCode.BUSY, "later"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert protocol.request(1, Command.STOP, ["a"]) == {"id": 1, "cmd": "stop", "names": ["a"]}
    assert protocol.request(2, Command.STATUS) == {"id": 2, "cmd": "status"}


def test_unknown_names_lists_them_and_the_known_ones() -> None:
    assert protocol.unknown_names(["a"], ["a", "b"]) is None
    error = protocol.unknown_names(["a", "zz", "yy"], ["a", "b"])
    assert error is not None and error.code is ErrorCode.UNKNOWN_SIDECAR
    assert error.reply(4)["error"] == {
        "code": "unknown_sidecar",
        "message": "no sidecar named 'zz', 'yy' (configured: a, b); nothing was done",
        "names": ["zz", "yy"],
        "known": ["a", "b"],
    }


RECORD = SidecarRecord(
    name="web", state=State.READY, pid=12, create_time=None, port=8080,
    url="tcp://127.0.0.1:8080", attempts=0, restarts=0, since=1767225600.0,
    last_exit=LastExit(code=1, signal=None, at=1767225599.0), reason="exited with code 1",
)  # fmt: skip
LAST_EXIT = {"code": 1, "signal": None, "at": "2025-12-31T23:59:59Z"}


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("ready", {"url": "tcp://127.0.0.1:8080"}),
        ("waiting", {"port": 8080, "holder_pid": 99, "verdict": "foreign",
                     "reason": "exited with code 1"}),
        ("backoff", {"attempt": 2, "max_attempts": 5, "delay_s": 2.0,
                     "next_attempt_at": "2026-01-01T00:00:02.000Z", "reason": "exited with code 1",
                     "last_exit": LAST_EXIT}),
        ("failed", {"reason": "exited with code 1", "last_exit": LAST_EXIT,
                    "output": ["one", "two"]}),
        ("exited", {"reason": "exited with code 1", "last_exit": LAST_EXIT,
                    "output": ["one", "two"]}),
        ("completed", {"reason": "exited with code 1", "last_exit": LAST_EXIT,
                       "output": ["one", "two"]}),
        ("stopped", {}),
        ("spawned", {}),
    ],
)  # fmt: skip
def test_sidecar_events_carry_the_fields_of_their_kind(
    kind: str, fields: dict[str, object]
) -> None:
    details = Details(
        holder_pid=99,
        verdict="foreign",
        attempt=2,
        max_attempts=5,
        delay_s=2.0,
        next_attempt_at=1767225602.0,
        output=("one", "two"),
    )
    event = events.sidecar_event(kind, RECORD, details, 1767225600.0)
    base = {"event": kind, "sidecar": "web", "state": "ready", "pid": 12}
    assert event == {**base, "at": "2026-01-01T00:00:00.000Z", **fields}
    assert json.loads(protocol.encode(event)) == event


def test_a_dependency_wait_event_names_the_dependency_not_a_port_holder() -> None:
    details = Details(dependency="db", condition="ready")
    reason = 'waiting for "db" to be ready (it is failed)'
    record = dataclasses.replace(RECORD, state=State.WAITING, reason=reason)
    event = events.sidecar_event("waiting", record, details, 1767225600.0)
    assert event == {
        "event": "waiting", "sidecar": "web", "state": "waiting", "pid": 12,
        "at": "2026-01-01T00:00:00.000Z", "dependency": "db", "condition": "ready",
        "reason": 'waiting for "db" to be ready (it is failed)',
    }  # fmt: skip


def test_iso_utc_ms() -> None:
    assert events.iso_utc_ms(0.0) == "1970-01-01T00:00:00.000Z"
    assert events.iso_utc_ms(1.2345) == "1970-01-01T00:00:01.234Z"


def sidecar(probe: ProbeKind, host: str = "127.0.0.1", port: int | None = 8080) -> SidecarConfig:
    return SidecarConfig(
        name="web",
        command=("x",),
        marker="x",
        ready=ReadyConfig(probe=probe, path="/health"),
        port=port,
        host=host,
    )


@pytest.mark.parametrize(
    ("config", "url"),
    [
        (sidecar(ProbeKind.HTTP), "http://127.0.0.1:8080/health"),
        (sidecar(ProbeKind.TCP), "tcp://127.0.0.1:8080"),
        (sidecar(ProbeKind.NONE), "tcp://127.0.0.1:8080"),
        (sidecar(ProbeKind.HTTP, "::1"), "http://[::1]:8080/health"),
        (sidecar(ProbeKind.TCP, "fe80::1%eth0"), "tcp://[fe80::1%eth0]:8080"),
        (sidecar(ProbeKind.TCP, "localhost"), "tcp://localhost:8080"),
        (sidecar(ProbeKind.NONE, port=None), None),
    ],
)
def test_url(config: SidecarConfig, url: str | None) -> None:
    assert config.url == url


class FakeSidecar:
    """A stand-in for the hub's reading side only (the hub itself is pure bookkeeping)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.STOPPED
        self.pid: int | None = None

    def record(self) -> SidecarRecord:
        return dataclasses.replace(RECORD, name=self.name, state=self.state, pid=self.pid)

    def details(self) -> Details:
        return Details()


class Inbox:
    def __init__(self, names: frozenset[str] | None) -> None:
        self.names = names
        self.got: list[dict[str, object]] = []

    def deliver(self, data: bytes) -> None:
        self.got.append(json.loads(data))


def test_hub_publishes_state_and_spawn_changes_once_to_matching_subscribers() -> None:
    hub = events.EventHub(clock=lambda: 0.0)
    everything, only_web = Inbox(None), Inbox(frozenset({"web"}))
    hub.subscribe(everything)
    hub.subscribe(only_web)
    web, api = FakeSidecar("web"), FakeSidecar("api")
    steps = [
        (web, State.STARTING, None),
        (web, State.STARTING, None),  # e.g. the attempt count changed: nothing to publish
        (web, State.STARTING, 5),  # the child is spawned
        (api, State.STARTING, None),
        (web, State.READY, 5),
        (web, State.READY, 5),
    ]
    for item, state, pid in steps:
        item.state, item.pid = state, pid
        hub.sidecar_changed(item)
    hub.daemon_event("daemon_stopping", reason="SIGTERM")
    kinds = [(e["sidecar"], e["event"]) for e in everything.got]
    assert kinds == [
        ("web", "starting"), ("web", "spawned"), ("api", "starting"), ("web", "ready"),
        (None, "daemon_stopping"),
    ]  # fmt: skip
    assert [(e["sidecar"], e["event"]) for e in only_web.got] == [
        ("web", "starting"), ("web", "spawned"), ("web", "ready"), (None, "daemon_stopping"),
    ]  # fmt: skip
    hub.unsubscribe(everything)
    web.state = State.STOPPING
    hub.sidecar_changed(web)
    assert len(everything.got) == 5 and only_web.got[-1]["event"] == "stopping"


def test_status_of_filters_sidecars() -> None:
    doc = {"supervisor": {"pid": 1}, "sidecars": [{"name": "a"}, {"name": "b"}]}
    assert events.status_of(doc, None) == doc
    assert events.status_of(doc, frozenset({"b"}))["sidecars"] == [{"name": "b"}]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/venv/bin/supervisor", "run", "-c", "x"], True),
        (["/usr/bin/python3", "-m", "supervisor", "run"], True),
        (["python", "-P", "-m", "supervisor", "run", "--log-format", "json"], True),
        (["python", "-msupervisor", "run"], True),
        (["/venv/bin/supervisor", "status"], False),
        (["supervisord", "-n", "-c", "run"], False),
        (["python", "-m", "supervisor.demo", "--port", "1"], False),
        (["python", "/x/supervisor/demo.py", "run"], False),
        (["supervisor"], False),
        ([], False),
    ],
)
def test_is_supervisor_run(argv: list[str], expected: bool) -> None:
    assert tags.is_supervisor_daemon(argv) is expected


def test_render_event_is_one_escaped_line() -> None:
    line = status.render_event(
        {
            "event": "failed", "sidecar": "web", "pid": None, "at": "T",
            "reason": "gave up", "output": ["\x1b[31mboom\nagain"],
        }
    )  # fmt: skip
    assert line == "T  web  failed  gave up  last output: \\x1b[31mboom\\nagain"
    ready = status.render_event(
        {"event": "ready", "sidecar": "web", "pid": 3, "at": "T", "url": "tcp://h:1"}
    )
    assert ready == "T  web  ready  pid 3  tcp://h:1"
    stopping = {"event": "daemon_stopping", "sidecar": None, "at": "T", "reason": "SIGTERM"}
    assert status.render_event(stopping) == "T  supervisor  daemon_stopping  SIGTERM"


SPACED = Path("/Users/me/Library/Application Support/app state")


@pytest.mark.parametrize(
    ("error", "hints"),
    [
        (errors.AlreadyRunningError(SPACED, 12),
         [["status", "--state-dir", str(SPACED)], ["stop", "--state-dir", str(SPACED)]]),
        (errors.NotRunningError(SPACED, Path("/c f/s.toml")),
         [["run", "-c", "/c f/s.toml", "--state-dir", str(SPACED)]]),
        (errors.SeveralRunningError([SPACED, Path("/c")]),
         [["status", "--state-dir", str(SPACED)]]),
        (errors.WaitTimeoutError(1.0, {"web": "waiting"}, SPACED),
         [["status", "--state-dir", str(SPACED), "web"]]),
        (errors.SidecarDownError("web", "failed", "gave up", SPACED),
         [["restart", "--state-dir", str(SPACED), "web"]]),
    ],
)  # fmt: skip
def test_hints_are_commands_that_work_as_printed(
    error: errors.SupervisorError, hints: list[list[str]]
) -> None:
    found = [shlex.split(q) for q in re.findall(r'"(supervisor [^"]*)"', error.message)]
    assert found == [["supervisor", *hint] for hint in hints]


@pytest.mark.parametrize("arg", ["it's", 'a "b"', "$HOME", "x;y", "a\\b", "é ü"])
def test_command_quotes_anything(arg: str) -> None:
    assert shlex.split(errors.command("status", "--state-dir", arg)) == [
        "supervisor", "status", "--state-dir", arg,
    ]  # fmt: skip


@pytest.mark.anyio
async def test_the_control_budget_makes_clients_wait_for_the_next_window_once_spent() -> None:
    import time

    import anyio

    from supervisor.control.budget import Budget

    budget = Budget(share=0.2, window_s=0.2)  # 40 ms of work per 200 ms window
    began = time.perf_counter()
    await budget.turn()  # nothing spent: no wait
    budget.charge(began - 0.01)  # 10 ms (and then some) spent
    await budget.turn()  # still under 40 ms: no wait
    budget.charge(time.perf_counter() - 0.05)  # another 50 ms: over the share
    before = anyio.current_time()
    await budget.turn()
    waited = anyio.current_time() - before
    assert waited > 0.0  # it slept until the window ended (a lower bound: load only adds)
    await budget.turn()  # a new window: no wait


DAEMON = client.RunningDaemon(pid=7, create_time=1.5, state_dir=Path("/tmp/state"))
BUSY = {"code": "busy", "message": "too many connections"}


@pytest.mark.parametrize(
    ("message", "outcome"),
    [
        ({"id": 1, "ok": True, "result": {"x": 1}}, client.Reply({"x": 1})),
        ({"id": 1, "ok": True, "result": None}, client.Reply(None)),
        ({"id": 2, "ok": True, "result": 1}, None),  # another request's reply
        ({"event": "ready", "sidecar": "a"}, "event"),
        ({"id": None, "ok": False, "error": BUSY}, client.BusyError),  # refused as we connected
        ({"id": 1, "ok": False, "error": BUSY}, client.BusyError),
        ({"id": 1, "ok": False, "error": {"code": "shutting_down"}}, errors.NotRunningError),
        ({"id": 1, "ok": False, "error": {"code": "unknown_sidecar", "names": ["b"]}},
         errors.UnknownSidecarError),
        ({"id": 1, "ok": False, "error": "garbled"}, errors.RequestRefusedError),
    ],
)  # fmt: skip
def test_a_client_tells_its_reply_from_events_other_replies_and_refusals(
    message: dict[str, object], outcome: object
) -> None:
    exchange = client.Exchange(DAEMON)
    request_id, line = exchange.request(Command.STATUS, ["a"])
    assert (request_id, json.loads(line)) == (1, {"id": 1, "cmd": "status", "names": ["a"]})
    if isinstance(outcome, type):
        with pytest.raises(outcome):
            exchange.reply(message, request_id)
    elif outcome == "event":
        assert exchange.reply(message, request_id) is None
        assert list(exchange.events) == [message]
    else:
        assert exchange.reply(message, request_id) == outcome
        assert not exchange.events


@pytest.mark.parametrize(
    ("line", "message"),
    [(b'{"id": 1}', {"id": 1}), (b"[1]", None), (b"not json", None), (b"\xff", None)],
)
def test_a_client_skips_lines_that_are_not_json_objects(
    line: bytes, message: dict[str, object] | None
) -> None:
    assert protocol.decode(line) == message
