"""`wait`'s rule (pure), for `supervisor wait` and both Python clients: a subscription's snapshot
and the events after it; done once every wanted sidecar is ready (or completed), SidecarDownError
as soon as one is failed or exited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from supervisor.errors import SidecarDownError

# Strings, not core.lifecycle.State: the commands stay clear of the config schema it imports.
DOWN = frozenset({"failed", "exited"})
DONE = frozenset({"ready", "completed"})  # completed: a one-shot task that exited 0 (v3)
EVENT_FIELDS = ("state", "pid", "url", "reason")  # what an event changes in a sidecar's record


def records_of(doc: object) -> list[dict[str, object]]:
    """The sidecar records of a status document (a subscription's snapshot)."""
    sidecars = doc.get("sidecars") if isinstance(doc, dict) else None
    return [s for s in sidecars if isinstance(s, dict)] if isinstance(sidecars, list) else []


class Readiness:
    """The wanted sidecars' records, kept current by the events after the snapshot."""

    def __init__(self, names: Sequence[str], snapshot: object, state_dir: Path) -> None:
        self.records = {str(s.get("name")): s for s in records_of(snapshot)}
        self.wanted = list(names) if names else list(self.records)
        self.state_dir = state_dir

    def state(self, name: str) -> object:
        return self.records.get(name, {}).get("state")

    def stopped(self) -> list[str]:
        """Wanted sidecars that are stopped: they stay so until someone starts them."""
        return [name for name in self.wanted if self.state(name) == "stopped"]

    def update(self, event: Mapping[str, object]) -> None:
        name = event.get("sidecar")
        if isinstance(name, str) and name in self.records:
            changed = {k: event[k] for k in EVENT_FIELDS if k in event}
            self.records[name] = {**self.records[name], **changed}

    def ready_records(self) -> list[dict[str, object]] | None:
        """The wanted records, in order, once all are done; None until then."""
        for name in self.wanted:
            state = str(self.state(name))
            if state in DOWN:
                reason = self.records.get(name, {}).get("reason")
                raise SidecarDownError(name, state, str(reason) if reason else None, self.state_dir)
        if all(self.state(name) in DONE for name in self.wanted):
            return [self.records[name] for name in self.wanted]
        return None

    def pending(self) -> dict[str, str]:
        """name -> state of each wanted sidecar not done yet (for WaitTimeoutError)."""
        return {name: str(self.state(name)) for name in self.wanted if self.state(name) not in DONE}
