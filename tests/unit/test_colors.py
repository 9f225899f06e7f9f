"""Whether console logs are coloured: NO_COLOR, FORCE_COLOR, TERM=dumb, else only on a TTY."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TextIO

import pytest

from supervisor.system.logs import use_colors


@pytest.fixture
def streams() -> Iterator[dict[bool, TextIO]]:
    """A real terminal (a pty) and a real pipe, as text streams: {is a tty: stream}."""
    master, slave = os.openpty()
    read_end, write_end = os.pipe()
    tty = open(slave, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    pipe = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        yield {True: tty, False: pipe}
    finally:
        tty.close()
        pipe.close()
        os.close(master)
        os.close(read_end)


@pytest.mark.parametrize(
    ("environ", "on_tty", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": ""}, True, True),  # no-color.org: present *and* not empty
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": ""}, False, False),
        ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False),  # NO_COLOR wins
        ({"TERM": "dumb"}, True, False),
        ({"TERM": "dumb", "FORCE_COLOR": "1"}, False, True),
        ({"TERM": "xterm-256color"}, True, True),
    ],
)
def test_colour_decision(
    streams: dict[bool, TextIO], environ: dict[str, str], on_tty: bool, expected: bool
) -> None:
    assert use_colors(streams[on_tty], environ) is expected


def test_a_closed_stream_is_not_coloured(streams: dict[bool, TextIO]) -> None:
    stream = streams[True]
    stream.close()
    assert use_colors(stream, {}) is False
