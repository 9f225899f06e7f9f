"""supervisor.client.records (pure): records from the protocol's JSON, and wait's readiness rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.client.records import ActionResult, Event, Readiness, Status
from supervisor.core.lifecycle import State
from supervisor.errors import SidecarDownError

STATE_DIR = Path("/tmp/state")


def snapshot(*states: tuple[str, str]) -> dict[str, object]:
    return {
        "supervisor": {"pid": 7, "create_time": 1.5, "state_dir": "/tmp/state", "config": None},
        "sidecars": [{"name": n, "state": s, "pid": None} for n, s in states],
    }


def test_a_status_document_becomes_typed_records_and_keeps_every_field() -> None:
    doc = snapshot(("web", "ready"), ("api", "completed"))
    doc["sidecars"][0].update(port=8000, url="http://127.0.0.1:8000/", restarts=2, memory=5)  # type: ignore[index]
    status = Status.from_document(doc)
    assert status.daemon.pid == 7 and status.daemon.state_dir == STATE_DIR
    assert status.daemon.config is None and not status.daemon.shutting_down
    web = status["web"]
    assert (web.state, web.port, web.url, web.restarts) == (State.READY, 8000, web.url, 2)
    assert web.ready and web.record["memory"] == 5
    assert status["api"].state == "completed"  # a state a newer daemon added stays a string
    assert status.names == ("web", "api")
    with pytest.raises(KeyError):
        status["nope"]


@pytest.mark.parametrize(
    ("document", "names"),
    [(None, ()), ({}, ()), ({"sidecars": "x"}, ()), ({"sidecars": [1, {"name": "a"}]}, ("a",))],
)
def test_malformed_documents_give_empty_or_partial_records(
    document: object, names: tuple[str, ...]
) -> None:
    assert Status.from_document(document).names == names


def test_action_results_and_events() -> None:
    result = ActionResult.from_record(
        {"name": "web", "action": "restarted", "was": "ready", "state": "starting", "pid": 9}
    )
    assert (result.was, result.state, result.pid) == (State.READY, State.STARTING, 9)
    event = Event.from_message(
        {"event": "ready", "sidecar": "web", "state": "ready", "pid": 9, "at": "t", "url": "u"}
    )
    assert (event.event, event.state, event.url, event.reason) == ("ready", State.READY, "u", None)
    daemon = Event.from_message({"event": "daemon_stopping", "sidecar": None, "state": None})
    assert daemon.sidecar is None and daemon.state is None and daemon.pid is None


@pytest.mark.parametrize(
    ("states", "names", "events", "outcome"),
    [
        ((("a", "ready"),), (), [], ["a"]),
        ((("a", "starting"),), (), [], None),
        ((("a", "starting"),), (), [("a", "ready")], ["a"]),
        ((("a", "ready"), ("b", "backoff")), (), [("a", "stopping")], None),
        ((("a", "ready"), ("b", "backoff")), ("a",), [], ["a"]),
        ((("a", "starting"), ("b", "ready")), ("b", "a"), [("a", "ready")], ["b", "a"]),
        ((("a", "starting"),), (), [("a", "failed")], SidecarDownError),
        ((("a", "exited"), ("b", "ready")), ("b",), [], ["b"]),
        ((("a", "exited"),), (), [], SidecarDownError),
        ((("a", "stopped"),), (), [("zzz", "ready")], None),
        # completed (a one-shot task that exited 0) is done, as for `supervisor wait`
        ((("a", "completed"), ("b", "ready")), (), [], ["a", "b"]),
        ((("a", "starting"),), (), [("a", "completed")], ["a"]),
    ],
)
def test_readiness(
    states: tuple[tuple[str, str], ...],
    names: tuple[str, ...],
    events: list[tuple[str, str]],
    outcome: list[str] | type[Exception] | None,
) -> None:
    readiness = Readiness(names, snapshot(*states), STATE_DIR)
    for name, state in events:
        readiness.update({"event": state, "sidecar": name, "state": state, "reason": "why"})

    def done() -> list[str] | None:
        ready = readiness.done()
        return None if ready is None else [s.name for s in ready]

    if isinstance(outcome, type):
        with pytest.raises(outcome):
            done()
    else:
        assert done() == outcome
        if outcome is None:
            assert readiness.pending()
