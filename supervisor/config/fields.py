"""Validation helpers (pure): a TOML table view that reports every problem with its key path."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import TypeVar

from supervisor.core import show


class Problems:
    """Collects every problem of a mapping so the user sees them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        # One problem, one line: control characters from the file are shown escaped.
        self.items.append(show.printable(f"{key}: {message}"))


E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")

MISSING = object()

# As the whole argv[0] of a command: the interpreter the daemon itself runs on (sys.executable).
PYTHON_PLACEHOLDER = "{python}"


def describe(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"')[:80] + '"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)[:80]


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`; did you mean "port"?` for a near miss of a known key, else ""."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.6)
    return f'; did you mean "{close[0]}"?' if close else ""


class Table:
    """A view of one TOML table that tracks which keys were read, to report unknown ones."""

    def __init__(
        self,
        raw: object,
        key: str,
        problems: Problems,
        *,
        interpreter: str | None = None,
        sep: str = ".",
    ) -> None:
        self.key = key
        self.sep = sep  # between this table's key and its own keys: `sidecar "api": port`
        self.problems = problems
        # What PYTHON_PLACEHOLDER stands for: the daemon's own interpreter (None: unknown).
        self.interpreter = interpreter
        if isinstance(raw, Mapping):
            self.raw: Mapping[str, object] = raw
        else:
            problems.add(key, f"must be a table, got {describe(raw)}")
            self.raw = {}
        self.seen: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}{self.sep}{name}" if self.key else name

    def get(self, name: str) -> object:
        self.seen.add(name)
        return self.raw.get(name, MISSING)

    def sub(self, name: str) -> Table:
        value = self.get(name)
        raw = {} if value is MISSING else value
        return Table(raw, self.path(name), self.problems, interpreter=self.interpreter)

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.problems.add(self.path(name), "unknown key" + did_you_mean(name, self.seen))

    def typed(self, name: str, default: T, check: Callable[[object], T | None], want: str) -> T:
        value = self.get(name)
        if value is MISSING:
            return default
        result = check(value)
        if result is None:
            self.problems.add(self.path(name), f"must be {want}, got {describe(value)}")
            return default
        return result

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, strict: bool = False
    ) -> float:
        def check(value: object) -> float | None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            try:
                number = float(value)
            except OverflowError:  # an integer with hundreds of digits
                return None
            if not math.isfinite(number) or number < minimum or (strict and number == minimum):
                return None
            return number

        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        return self.typed(name, default, check, f"a number {bound}")

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        def check(value: object) -> int | None:
            if isinstance(value, bool) or not isinstance(value, int):
                return None
            in_range = value >= minimum and (maximum is None or value <= maximum)
            return value if in_range else None

        want = f"an integer >= {minimum}" if maximum is None else f"an integer {minimum}..{maximum}"
        return self.typed(name, default, check, want)

    def boolean(self, name: str, default: bool) -> bool:
        return self.typed(
            name, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def string(self, name: str, default: str, *, nonempty: bool = False) -> str:
        def check(value: object) -> str | None:
            if not isinstance(value, str) or (nonempty and not value) or "\0" in value:
                return None
            return value

        return self.typed(name, default, check, "a non-empty string" if nonempty else "a string")

    def choice(self, name: str, default: E, enum: type[E]) -> E:
        options = " | ".join(f'"{m.value}"' for m in enum)

        def check(value: object) -> E | None:
            try:
                return enum(value) if isinstance(value, str) else None
            except ValueError:
                return None

        return self.typed(name, default, check, f"one of {options}")

    def argv(self, name: str, *, required: bool) -> tuple[str, ...]:
        """An argv list: strings (empty ones allowed, e.g. redis' `--save ""`) but argv[0].

        argv[0] = PYTHON_PLACEHOLDER is replaced by the daemon's own interpreter, so that the
        bundled demo (or any Python sidecar installed alongside) runs from pipx or a venv that
        is not activated, whatever PATH holds.
        """
        value = self.get(name)
        key = self.path(name)
        if value is MISSING:
            if required:
                self.problems.add(key, "is required (a non-empty list of strings)")
            return ()
        want = "a non-empty list of strings" if required else "a list of strings"
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            self.problems.add(key, f"must be {want}, got {describe(value)}")
            return ()
        if required and not value:
            self.problems.add(key, f"must be {want}, got an empty list")
            return ()
        problems = len(self.problems.items)
        for index, arg in enumerate(value):
            if "\0" in arg:
                self.problems.add(f"{key}[{index}]", "must not contain a NUL character")
        if value and not value[0]:
            self.problems.add(f"{key}[0]", 'the program must not be empty, got ""')
        if len(self.problems.items) > problems:
            return ()
        if value and value[0] == PYTHON_PLACEHOLDER:
            if self.interpreter is None:
                self.problems.add(
                    f"{key}[0]",
                    f"{PYTHON_PLACEHOLDER} stands for the daemon's Python interpreter, which "
                    "cannot be located here; give the program's absolute path",
                )
                return ()
            return (self.interpreter, *value[1:])
        return tuple(value)
