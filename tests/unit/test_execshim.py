"""The exec shim's argv (pure): the command is passed as words, never as shell text."""

from __future__ import annotations

import pytest

from supervisor.system import execshim


def test_the_command_follows_the_shim_as_separate_words() -> None:
    argv = ["node", "server.js", "$(rm -rf ~)", "a b"]
    assert execshim.wrap(argv, {"PATH": "/bin", "HOME": "/root"}) == [
        "/bin/sh",
        "-c",
        execshim.SHIM,
        "sh",
        *argv,
    ]


@pytest.mark.parametrize("name", ["ODD-NAME", "odd.name", "1ST", "with space", "ünï", "-X"])
def test_names_a_shell_drops_go_through_env(name: str) -> None:
    wrapped = execshim.wrap(["server"], {"PATH": "/bin", name: "v=1"})
    assert wrapped[4:] == [execshim.ENV, "--", f"{name}=v=1", "server"]


def test_the_shim_names_only_single_digit_fds() -> None:
    # dash cannot redirect fds above 9: the socket travels as stdin, then moves to 3.
    assert "3<&0" in execshim.SHIM and "0</dev/null" in execshim.SHIM
    assert 'exec "$@"' in execshim.SHIM and "LISTEN_PID=$$" in execshim.SHIM
