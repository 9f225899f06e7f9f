"""Merging several sidecars' output.log lines: time order, each sidecar's order kept, prefixes."""

from __future__ import annotations

from supervisor.cli import logmerge


def ln(ms: int, text: str) -> bytes:
    return f"2026-12-07T17:44:{ms // 1000:02d}.{ms % 1000:03d}Z stdout {text}\n".encode()


def test_lines_merge_in_time_order_and_keep_each_sidecars_order() -> None:
    merged = logmerge.merge(
        {
            "api": [ln(100, "a1"), ln(300, "a2"), ln(300, "a3"), ln(900, "a4")],
            "web": [ln(50, "w1"), ln(300, "w2"), ln(1200, "w3")],
        }
    )
    assert [(line.name, line.text.split()[-1].decode()) for line in merged] == [
        ("web", "w1"),
        ("api", "a1"),
        ("api", "a2"),  # a tie: the sidecar named first comes first, each keeps its order
        ("api", "a3"),
        ("web", "w2"),
        ("api", "a4"),
        ("web", "w3"),
    ]


def test_the_last_n_lines_of_the_merge() -> None:
    lines = {"a": [ln(1, "1"), ln(3, "3")], "b": [ln(2, "2"), ln(4, "4")]}
    assert [x.text for x in logmerge.merge(lines, 3)] == [ln(2, "2"), ln(3, "3"), ln(4, "4")]
    assert logmerge.merge(lines, 0) == []


def test_labels_are_padded_and_coloured_only_when_asked() -> None:
    names = ["api", "worker"]
    assert logmerge.label("api", names, colours=False) == b"api    | "
    assert logmerge.label("worker", names, colours=False) == b"worker | "
    coloured = logmerge.label("api", names, colours=True)
    assert coloured.startswith(b"\x1b[") and coloured.endswith(b"\x1b[0m | ")
    assert coloured != logmerge.label("worker", names, colours=True)


def test_follower_holds_a_partial_line_until_its_end() -> None:
    follower = logmerge.Follower(["a", "b"])
    first = ln(5, "one")
    batch = follower.batch({"a": first[:10], "b": ln(7, "seven")})
    assert [line.name for line in batch] == ["b"]
    batch = follower.batch({"a": first[10:] + ln(9, "nine"), "b": b""})
    assert [line.text for line in batch] == [first, ln(9, "nine")]
    assert logmerge.render(batch, ["a", "b"], colours=False) == b"a | " + first + b"a | " + ln(
        9, "nine"
    )
