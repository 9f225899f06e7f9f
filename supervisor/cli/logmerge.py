"""`supervisor logs` for several sidecars at once: their output.log lines merged in time order.

Every output.log line starts with the same fixed-width UTC timestamp (`outputlog.Stamper`), so
byte order of that prefix is time order: the merge is a k-way merge on it (ties keep the order
the sidecars were named in). Each line is prefixed with its sidecar's name, coloured per sidecar
on a terminal. Following reads every sidecar's new lines (tail.OutputReader) each poll and
prints them merged the same way; a partial last line waits for its end.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from supervisor.core import console

STAMP_BYTES = len(b"2026-01-01T00:00:00.000Z")


@dataclass(frozen=True)
class Line:
    name: str
    text: bytes  # one output.log line, with its newline

    @property
    def stamp(self) -> bytes:
        return self.text[:STAMP_BYTES]


def merge(lines_by_name: Mapping[str, Sequence[bytes]], count: int | None = None) -> list[Line]:
    """Every sidecar's lines in time order (each sidecar's own order kept); the last `count`."""
    streams = [
        _keyed(order, name, lines) for order, (name, lines) in enumerate(lines_by_name.items())
    ]
    merged = [item[3] for item in heapq.merge(*streams)]
    if count is not None:
        return merged[-count:] if count > 0 else []
    return merged


def _keyed(order: int, name: str, lines: Sequence[bytes]) -> Iterator[tuple[bytes, int, int, Line]]:
    for index, line in enumerate(lines):
        yield line[:STAMP_BYTES], order, index, Line(name, line)


def label(name: str, names: Sequence[str], *, colours: bool) -> bytes:
    """`api    | ` (the names padded to one width), coloured per sidecar when asked."""
    width = min(max((len(n) for n in names), default=0), console.NAME_WIDTH)
    text = console.cut(name, console.NAME_WIDTH).ljust(width)
    if colours:
        text = console.colour_of(name, list(names)) + text + "\x1b[0m"
    return (text + " | ").encode()


def render(lines: Iterable[Line], names: Sequence[str], *, colours: bool) -> bytes:
    return b"".join(label(line.name, names, colours=colours) + line.text for line in lines)


@dataclass
class Follower:
    """Splits each sidecar's newly read bytes into whole lines; a partial line waits."""

    names: Sequence[str]
    _partial: dict[str, bytes] = field(default_factory=dict)

    def feed(self, name: str, data: bytes) -> list[bytes]:
        data = self._partial.pop(name, b"") + data
        *whole, rest = data.split(b"\n")
        if rest:
            self._partial[name] = rest
        return [line + b"\n" for line in whole]

    def batch(self, new: Mapping[str, bytes]) -> list[Line]:
        """What a poll read from each sidecar, as whole lines merged in time order."""
        return merge({name: self.feed(name, data) for name, data in new.items()})


def ordered(names: Iterator[str] | Sequence[str]) -> list[str]:
    """Names without repeats, in the order given."""
    return list(dict.fromkeys(names))
