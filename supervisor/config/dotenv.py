"""`env_file` (pure): dotenv text -> variables. `KEY=VALUE` lines, `#` comments, an optional
`export ` prefix, single quotes (literal) and double quotes (`\\n \\t \\\\ \\"` escapes).

No variable expansion and no multi-line values: what a line says is what the child gets.
"""

from __future__ import annotations

import re

KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$"}


class DotenvError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def parse(text: str) -> dict[str, str]:
    """The variables `text` sets, in order (a later line wins over an earlier one)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep:
            raise DotenvError(number, f"expected KEY=VALUE, got {_show(raw)}")
        if not KEY_RE.fullmatch(key):
            raise DotenvError(number, f"{_show(key)} is not a valid variable name")
        env[key] = _value(rest.strip(), number)
    return env


def _value(text: str, number: int) -> str:
    if not text:
        return ""
    quote = text[0]
    if quote == "'":
        end = text.find("'", 1)
        if end < 0:
            raise DotenvError(number, "unterminated single quote")
        _trailing(text[end + 1 :], number)
        return text[1:end]
    if quote == '"':
        out: list[str] = []
        index = 1
        while index < len(text):
            char = text[index]
            if char == "\\" and index + 1 < len(text):
                nxt = text[index + 1]
                out.append(_ESCAPES.get(nxt, "\\" + nxt))
                index += 2
                continue
            if char == '"':
                _trailing(text[index + 1 :], number)
                return "".join(out)
            out.append(char)
            index += 1
        raise DotenvError(number, "unterminated double quote")
    # Unquoted: a ` #` starts a comment; the value is what comes before it, trimmed.
    comment = re.search(r"\s#", text)
    if comment is not None:
        text = text[: comment.start()]
    if "\0" in text:
        raise DotenvError(number, "a value must not contain a NUL character")
    return text.strip()


def _trailing(rest: str, number: int) -> None:
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        raise DotenvError(number, f"unexpected text after the closing quote: {_show(rest)}")


def _show(text: str) -> str:
    return '"' + text[:60].replace('"', '\\"') + '"'
