"""Untrusted strings reach a terminal escaped (issue 25): another process's argv, its user name,
config values. One function (show.printable); `supervisor port` prints everything through it."""

from __future__ import annotations

import unicodedata

import pytest

from supervisor.config import ReclaimConfig
from supervisor.core import show
from supervisor.reconcile.classify import Classification, Verdict
from supervisor.reconcile.decide import LaunchKind, decide
from supervisor.reconcile.diagnose import Diagnosis, NextRun, render_text

HOSTILE = [
    "\x1b[8m",  # hides what follows
    "\x07",  # BEL
    "\nverdict:   orphan: the next supervisor run reclaims it",  # a forged line
    "\r    to do:     nothing",  # overwrites the line
    "\x9b31m",  # C1 CSI
    "\x1b]0;title\x07",  # OSC: sets the terminal's title
    "\x00\x7f\x08",
]


def control_characters(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}]


@pytest.mark.parametrize("bad", HOSTILE, ids=[repr(b)[1:-1][:20] for b in HOSTILE])
def test_printable_leaves_no_control_character(bad: str) -> None:
    shown = show.printable(f"node server.js {bad} --port 1")
    assert control_characters(shown) == []
    assert "node server.js" in shown


def test_port_output_escapes_the_holders_argv_user_and_reason() -> None:
    hostile = "".join(HOSTILE)
    found = [
        Diagnosis(
            pid=4242,
            uid=1000,
            user=f"mallory{hostile}",
            command=f"python3 -m http.server {hostile}",
            ppid=1,
            create_time=None,
            addresses=(f"127.0.0.1:8000{hostile}",),
            verdict="unproven",
            reason=f"it matches the marker only {hostile!r}{hostile}",
            advice=f"kill 4242 yourself{hostile}",
        )
    ]
    verdicts = [Classification(Verdict.UNPROVEN, "marker only")]
    next_run = NextRun(
        decide(verdicts, ReclaimConfig(), LaunchKind.BOOT),
        decide(verdicts, ReclaimConfig(), LaunchKind.UNATTENDED),
        configured=False,
    )
    text = render_text(8000, found, f"marker{hostile}", next_run)
    lines = text.split("\n")
    for line in lines:
        assert control_characters(line) == [], line
    # The forged line stays inside the command's line: one verdict line, the real one.
    assert [line for line in lines if line.lstrip().startswith("verdict:")] == [
        next(line for line in lines if "verdict:   unproven" in line)
    ]
    assert "asks for consent" in text and "waits" in text
