"""env_file (pure): the dotenv lines we read, and the ones we refuse."""

from __future__ import annotations

import pytest

from supervisor.config.dotenv import DotenvError, parse

VALID = [
    ("A=1", {"A": "1"}),
    ("A = 1 ", {"A": "1"}),
    ("export A=1", {"A": "1"}),
    ("export\tA=1", {"A": "1"}),
    ("# a comment\n\n   # indented comment\nA=1", {"A": "1"}),
    ("A=1 # trailing comment", {"A": "1"}),
    ("A=a#b", {"A": "a#b"}),  # no space before '#': part of the value
    ("A=", {"A": ""}),
    ("A=''", {"A": ""}),
    ("A='single $HOME \\n # kept'", {"A": "single $HOME \\n # kept"}),
    ('A="double \\n \\t \\" \\\\ x"', {"A": 'double \n \t " \\ x'}),
    ('A="with # hash" # comment', {"A": "with # hash"}),
    ("A=spaces inside  value", {"A": "spaces inside  value"}),
    ("A=1\nA=2", {"A": "2"}),  # the later line wins
    ("DB_URL=postgres://u:p@h:5432/d?x=1", {"DB_URL": "postgres://u:p@h:5432/d?x=1"}),
    ("a.b_C9=x", {"a.b_C9": "x"}),
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("exported=1", {"exported": "1"}),  # a key that starts with "export"
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[v[0] for v in VALID])
def test_dotenv_parses(text: str, expected: dict[str, str]) -> None:
    assert parse(text) == expected


INVALID = [
    ("JUSTAKEY", 1, "expected KEY=VALUE"),
    ("A=1\n1A=2", 2, "is not a valid variable name"),
    ("=value", 1, "is not a valid variable name"),
    ("A='open", 1, "unterminated single quote"),
    ('A="open', 1, "unterminated double quote"),
    ("A='x' y", 1, "unexpected text after the closing quote"),
    ("MY VAR=1", 1, "is not a valid variable name"),
]


@pytest.mark.parametrize(("text", "line", "message"), INVALID, ids=[v[0] for v in INVALID])
def test_dotenv_refuses_with_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DotenvError, match=message) as caught:
        parse(text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"line {line}: ")
