"""Events: what each one carries, and the hub that hands every sidecar state change, encoded
once, to each subscriber.

Publishing never waits: a subscriber's `deliver` only queues (and drops its own connection
when its queue is full), so a client that stops reading cannot slow supervision down.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from supervisor.control import protocol
from supervisor.core.lifecycle import State
from supervisor.core.status import Details, Observed, SidecarRecord


def iso_utc_ms(epoch_s: float) -> str:
    """ISO 8601 UTC to the millisecond: 2026-01-01T00:00:00.000Z (a backoff is often < 1 s)."""
    stamp = dt.datetime.fromtimestamp(epoch_s, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def sidecar_event(
    kind: str, record: SidecarRecord, details: Details, now_s: float
) -> dict[str, object]:
    """The event for a sidecar that has just entered state `kind` (or `spawned` a child)."""
    event: dict[str, object] = {
        "event": kind,
        "sidecar": record.name,
        "state": record.state.value,
        "pid": record.pid,
        "at": iso_utc_ms(now_s),
    }
    last_exit = record.last_exit.to_json() if record.last_exit is not None else None
    match kind:
        case "ready":
            event["url"] = record.url
        case "waiting" if details.dependency is not None:
            event.update(
                dependency=details.dependency,
                condition=details.condition,
                reason=record.reason,
            )
        case "waiting":
            event.update(
                port=record.port,
                holder_pid=details.holder_pid,
                verdict=details.verdict,
                reason=record.reason,
            )
        case "backoff":
            event.update(
                attempt=details.attempt,
                max_attempts=details.max_attempts,
                delay_s=details.delay_s,
                next_attempt_at=(
                    iso_utc_ms(details.next_attempt_at)
                    if details.next_attempt_at is not None
                    else None
                ),
                reason=record.reason,
                last_exit=last_exit,
            )
        case "failed" | "exited" | "completed":
            event.update(reason=record.reason, last_exit=last_exit, output=list(details.output))
    return event


def daemon_event(kind: str, now_s: float, **fields: object) -> dict[str, object]:
    return {"event": kind, "sidecar": None, "at": iso_utc_ms(now_s), **fields}


class Subscriber(Protocol):
    @property
    def names(self) -> frozenset[str] | None:
        """The sidecars it follows; None for all of them."""

    def deliver(self, data: bytes) -> None:
        """Queue one encoded event; never blocks."""


class EventHub:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._subscribers: dict[int, Subscriber] = {}
        self._seen: dict[str, tuple[State, int | None]] = {}  # name -> (state, pid) published

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers[id(subscriber)] = subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.pop(id(subscriber), None)

    def sidecar_changed(self, sidecar: Observed) -> None:
        """Called on every change the daemon hears of; publishes state (and pid) changes."""
        record = sidecar.record()
        state, pid = record.state, record.pid
        previous = self._seen.get(sidecar.name)
        self._seen[sidecar.name] = (state, pid)
        if previous is not None and previous[0] is state:
            if state is not State.STARTING or pid is None or previous[1] == pid:
                return  # nothing a client follows changed (e.g. the attempt count was reset)
            kind = "spawned"
        else:
            kind = state.value
        if not self._subscribers:
            return
        event = sidecar_event(kind, record, sidecar.details(), self._clock())
        self._publish(sidecar.name, protocol.encode(event))

    def daemon_event(self, kind: str, **fields: object) -> None:
        if self._subscribers:
            self._publish(None, protocol.encode(daemon_event(kind, self._clock(), **fields)))

    def _publish(self, name: str | None, data: bytes) -> None:
        # A copy: delivering may drop a subscriber, which unsubscribes it.
        for subscriber in list(self._subscribers.values()):
            names = subscriber.names
            if name is None or names is None or name in names:
                subscriber.deliver(data)


def status_of(doc: Mapping[str, object], names: frozenset[str] | None) -> dict[str, object]:
    """The status document, with only `names`' sidecars when given."""
    sidecars = doc.get("sidecars")
    if names is None or not isinstance(sidecars, list):
        return dict(doc)
    return {
        **doc,
        "sidecars": [s for s in sidecars if isinstance(s, Mapping) and s.get("name") in names],
    }
