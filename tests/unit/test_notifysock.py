"""The receiving side of sd_notify: message parsing, and what a datagram's ancillary data says
(the sender's pid from the kernel; passed fds closed), over a real datagram socket pair."""

from __future__ import annotations

import os
import socket
import sys

import pytest

from supervisor.system import notifysock
from tests.support import session_leader

MESSAGES = [
    (b"READY=1", {"READY": "1"}),
    (b"READY=1\nSTATUS=warming up: 3/5\n", {"READY": "1", "STATUS": "warming up: 3/5"}),
    (b"STATUS=a=b", {"STATUS": "a=b"}),
    (b"WATCHDOG=1\nnonsense\n=empty key", {"WATCHDOG": "1"}),
    (b"\xffSTATUS=x", {"\ufffdSTATUS": "x"}),
    (b"", {}),
]


@pytest.mark.parametrize(("data", "fields"), MESSAGES, ids=[repr(m[0]) for m in MESSAGES])
def test_parse_message(data: bytes, fields: dict[str, str]) -> None:
    assert notifysock.parse_message(data) == fields


@pytest.mark.skipif(not notifysock.SUPPORTED, reason="SO_PASSCRED is Linux only")
def test_the_kernel_names_the_sender_and_passed_fds_are_closed() -> None:
    receiver, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        read_end, write_end = os.pipe()
        try:
            socket.send_fds(sender, [b"BARRIER=1"], [write_end])
            os.close(write_end)  # the only copy left is the one in flight
            write_end = -1
            data, ancillary, _flags, _addr = receiver.recvmsg(
                notifysock.MAX_DATAGRAM, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64)
            )
            assert data == b"BARRIER=1"
            assert notifysock._sender(ancillary) == os.getpid()
            notifysock._close_passed_fds(ancillary)
            # Every copy of the write end is closed: the reader sees end of file at once (as
            # systemd-notify's barrier does).
            assert os.read(read_end, 1) == b""
        finally:
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)


@pytest.mark.skipif(sys.platform != "linux", reason="sessions read from /proc")
def test_refusal_rules() -> None:
    # Two processes of this test, each leading its own session as sidecars do: neither is the
    # other, in a session the other leads, or born of it.
    with session_leader() as child, session_leader() as stranger:
        assert notifysock._refusal(child, child) is None  # the child itself
        assert (
            notifysock._refusal(None, child) == "the sender cannot be identified (no credentials)"
        )
        assert notifysock._refusal(0, child) == "the sender cannot be identified (no credentials)"
        assert notifysock._refusal(stranger, child) == "the sender is not a process of this sidecar"
