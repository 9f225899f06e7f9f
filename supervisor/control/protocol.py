"""The control protocol (pure): JSON lines on `control.sock`, requests, replies, events.

A request is one line `{"id": ..., "cmd": ..., "names": [...]}`; its reply echoes the id with
`"ok": true, "result": ...` or `"ok": false, "error": {"code", "message"}`. After `subscribe`
the connection also carries events `{"event": ..., "sidecar": ..., ...}` (no `id`; built in
events.py, which commands never import). See docs/control.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import NamedTuple

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024  # one request line, newline excluded
MAX_NAMES = 1024

RequestId = str | int | float | None


class Command(StrEnum):
    STATUS = "status"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    SUBSCRIBE = "subscribe"


# Commands that act on sidecars: names are required (the CLI's `stop`/`restart` without names
# signal the daemon instead, and never reach the socket).
ACTIONS = frozenset({Command.START, Command.STOP, Command.RESTART})


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"  # not JSON, not an object, a field of the wrong type or unknown
    TOO_LARGE = "too_large"  # the line exceeds MAX_REQUEST_BYTES
    UNKNOWN_COMMAND = "unknown_command"
    UNKNOWN_SIDECAR = "unknown_sidecar"  # nothing was done
    SHUTTING_DOWN = "shutting_down"  # the daemon is stopping: no launches any more
    BUSY = "busy"  # too many connections; retry later
    FORBIDDEN = "forbidden"  # the peer is not of our uid
    INTERNAL = "internal"  # a bug in the daemon (logged); nothing is known to have changed


class ProtocolError(Exception):
    """A request that gets an error reply instead of a result."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        request_id: RequestId = None,
        **extra: object,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.extra = extra  # more fields of the error object (unknown_sidecar: names, known)

    def reply(self, request_id: RequestId = None) -> dict[str, object]:
        """The error reply, to `request_id` (default: the id the failed parse could read)."""
        return error_reply(
            self.request_id if request_id is None else request_id,
            self.code,
            self.message,
            **self.extra,
        )


class Request(NamedTuple):  # NamedTuple, not a dataclass: `supervisor status` imports this
    id: RequestId
    cmd: Command
    names: tuple[str, ...]


_KEYS = frozenset({"id", "cmd", "names"})


class _Rejected(ValueError):
    """Valid to Python's json, but not strict JSON, or ambiguous: never acted on."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # `{"cmd":"status","cmd":"stop"}` would silently run the last one; a strict peer sees the
    # first. Neither is what the client meant to say for certain.
    doc: dict[str, object] = {}
    for key, value in pairs:
        if key in doc:
            raise _Rejected(f"duplicate key {key[:64]!r}")
        doc[key] = value
    return doc


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: echoed, it would be `Infinity`
        raise _Rejected(f"number out of range: {text[:32]}")
    return value


def _no_constant(text: str) -> object:
    raise _Rejected(f"{text} is not JSON")  # NaN, Infinity, -Infinity


def parse_request(line: bytes) -> Request:
    """One request line (without its newline); ProtocolError if it is not a valid request."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"a request line is at most {MAX_REQUEST_BYTES}")
    try:
        doc = json.loads(
            line,
            object_pairs_hook=_unique_keys,
            parse_float=_finite,
            parse_constant=_no_constant,
        )
    except _Rejected as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "not a JSON object") from None
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "not a JSON object")
    request_id = doc.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int | float | None):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id: must be a string, a number or null")
    unknown = sorted(str(key) for key in doc.keys() - _KEYS)
    if unknown:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"unknown key {unknown[0]!r} (known: cmd, id, names)", request_id
        )
    cmd = doc.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "cmd: must be a string", request_id)
    try:
        command = Command(cmd)
    except ValueError:
        known = ", ".join(c.value for c in Command)
        raise ProtocolError(
            ErrorCode.UNKNOWN_COMMAND, f"unknown cmd {cmd[:64]!r} (known: {known})", request_id
        ) from None
    names = doc.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "names: must be a list of strings", request_id)
    if len(names) > MAX_NAMES:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"names: at most {MAX_NAMES}", request_id)
    if command in ACTIONS and not names:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"{command}: names must list at least one sidecar", request_id
        )
    return Request(id=request_id, cmd=command, names=tuple(dict.fromkeys(names)))


def request(request_id: RequestId, cmd: Command, names: Sequence[str] = ()) -> dict[str, object]:
    doc: dict[str, object] = {"id": request_id, "cmd": cmd.value}
    if names:
        doc["names"] = list(names)
    return doc


def ok_reply(request_id: RequestId, result: object) -> dict[str, object]:
    return {"id": request_id, "ok": True, "result": result}


def error_reply(
    request_id: RequestId, code: ErrorCode, message: str, **extra: object
) -> dict[str, object]:
    error: dict[str, object] = {"code": code.value, "message": message, **extra}
    return {"id": request_id, "ok": False, "error": error}


def encode(message: Mapping[str, object]) -> bytes:
    """One line of compact JSON (non-ASCII escaped, so a line is pure ASCII)."""
    return json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"


def decode(line: bytes) -> dict[str, object] | None:
    """A line the daemon sent, as the JSON object it is; None for anything else (skipped)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def unknown_names(names: Sequence[str], known: Sequence[str]) -> ProtocolError | None:
    """The error for names that are not configured (None when every name is known)."""
    missing = [n for n in names if n not in known]
    if not missing:
        return None
    listed = ", ".join(repr(n[:64]) for n in missing[:10])
    configured = ", ".join(known) if known else "none"
    return ProtocolError(
        ErrorCode.UNKNOWN_SIDECAR,
        f"no sidecar named {listed} (configured: {configured}); nothing was done",
        names=missing,
        known=list(known),
    )
