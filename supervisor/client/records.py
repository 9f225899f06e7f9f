"""What the public client returns (pure): typed, frozen records built from the control protocol's
JSON at the edge; `wait`'s readiness rule (control/readiness.py) giving those records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.control import readiness
from supervisor.control.readiness import records_of
from supervisor.core.lifecycle import State


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _state(value: object) -> State | str:
    """A known state as the enum; a state a newer daemon added stays a string."""
    text = str(value)
    try:
        return State(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Sidecar:
    """One sidecar in a status document (docs/control.md, `status`)."""

    name: str
    state: State | str
    pid: int | None
    port: int | None
    url: str | None
    restarts: int
    reason: str | None
    record: Mapping[str, object] = field(repr=False, compare=False)  # every field, as sent

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> Sidecar:
        return cls(
            name=str(record.get("name")),
            state=_state(record.get("state")),
            pid=_int(record.get("pid")),
            port=_int(record.get("port")),
            url=_str(record.get("url")),
            restarts=_int(record.get("restarts")) or 0,
            reason=_str(record.get("reason")),
            record=dict(record),
        )

    @property
    def ready(self) -> bool:
        return self.state == State.READY


@dataclass(frozen=True)
class DaemonInfo:
    pid: int
    create_time: float | None
    state_dir: Path | None
    config: Path | None
    shutting_down: bool
    record: Mapping[str, object] = field(repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> DaemonInfo:
        created = record.get("create_time")
        state_dir = _str(record.get("state_dir"))
        config = _str(record.get("config"))
        return cls(
            pid=_int(record.get("pid")) or 0,
            create_time=float(created) if isinstance(created, int | float) else None,
            state_dir=Path(state_dir) if state_dir else None,
            config=Path(config) if config else None,
            shutting_down=record.get("shutting_down") is True,
            record=dict(record),
        )


@dataclass(frozen=True)
class Status:
    daemon: DaemonInfo
    sidecars: tuple[Sidecar, ...]
    document: Mapping[str, object] = field(repr=False, compare=False)  # the JSON, as sent

    @classmethod
    def from_document(cls, doc: object) -> Status:
        document = doc if isinstance(doc, dict) else {}
        daemon = document.get("supervisor")
        return cls(
            daemon=DaemonInfo.from_record(daemon if isinstance(daemon, dict) else {}),
            sidecars=tuple(Sidecar.from_record(s) for s in records_of(document)),
            document=document,
        )

    def __getitem__(self, name: str) -> Sidecar:
        for sidecar in self.sidecars:
            if sidecar.name == name:
                return sidecar
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sidecars)


@dataclass(frozen=True)
class ActionResult:
    """The result of `start`, `stop` or `restart` for one sidecar."""

    name: str
    action: str  # started, stopped, restarted, unchanged
    was: State | str
    state: State | str
    pid: int | None

    @classmethod
    def from_record(cls, record: object) -> ActionResult:
        fields = record if isinstance(record, dict) else {}
        return cls(
            name=str(fields.get("name")),
            action=str(fields.get("action")),
            was=_state(fields.get("was")),
            state=_state(fields.get("state")),
            pid=_int(fields.get("pid")),
        )


def action_results(result: object) -> list[ActionResult]:
    return [ActionResult.from_record(r) for r in result] if isinstance(result, list) else []


@dataclass(frozen=True)
class Event:
    """A state change (docs/control.md, `Events`): `event` is the state just entered, `spawned`,
    or `daemon_stopping` (then `sidecar` is None)."""

    event: str
    sidecar: str | None
    state: State | str | None
    pid: int | None
    at: str
    fields: Mapping[str, object] = field(repr=False, compare=False)  # every field, as sent

    @classmethod
    def from_message(cls, message: Mapping[str, object]) -> Event:
        state = message.get("state")
        return cls(
            event=str(message.get("event")),
            sidecar=_str(message.get("sidecar")),
            state=None if state is None else _state(state),
            pid=_int(message.get("pid")),
            at=str(message.get("at", "")),
            fields=dict(message),
        )

    @property
    def url(self) -> str | None:
        return _str(self.fields.get("url"))

    @property
    def reason(self) -> str | None:
        return _str(self.fields.get("reason"))


class Readiness(readiness.Readiness):
    """`wait`'s rule (control/readiness.py), its records as Sidecars."""

    def done(self) -> list[Sidecar] | None:
        ready = self.ready_records()
        return None if ready is None else [Sidecar.from_record(r) for r in ready]
