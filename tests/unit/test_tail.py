"""Reading output.log as `supervisor logs` does, on real files rotated by the real writer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.config import OutputConfig, ProbeKind, ReadyConfig, SidecarConfig
from supervisor.sidecar import tail
from supervisor.sidecar.outputlog import OUTPUT_NAME
from supervisor.system.rotating import RotatingFile


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    (state / "web").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    return state


@pytest.fixture
def writer(state: Path) -> Iterator[RotatingFile]:
    fd = os.open(state / "web", os.O_RDONLY | os.O_DIRECTORY)
    file = RotatingFile(fd, OUTPUT_NAME, max_bytes=100, backups=3)
    os.close(fd)
    yield file
    file.close()


def line(n: int) -> bytes:
    return f"line {n:04d}\n".encode()  # 10 bytes: ten to a file


def lines(first: int, last: int) -> list[bytes]:
    return [line(n) for n in range(first, last + 1)]


def sidecar(name: str, *, file: bool = True) -> SidecarConfig:
    return SidecarConfig(
        name=name,
        command=("x",),
        marker="x",
        ready=ReadyConfig(probe=ProbeKind.NONE),
        output=OutputConfig(file=file),
    )


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, []), (1, [line(34)]), (5, lines(30, 34)), (10, lines(25, 34)), (18, lines(17, 34))],
)
def test_last_lines_continue_into_rotated_files(
    state: Path, writer: RotatingFile, count: int, expected: list[bytes]
) -> None:
    writer.append(lines(0, 34))  # files: .3 = 0-4, .2 = 5-14, .1 = 15-24, output.log = 25-34
    reader = tail.OutputReader(state, "web")
    assert reader.last(count) == expected
    reader.close()


def test_last_lines_are_all_there_is_when_asked_for_more(state: Path, writer: RotatingFile) -> None:
    writer.append(lines(0, 12))
    reader = tail.OutputReader(state, "web")
    assert reader.last(1000) == lines(0, 12)
    reader.close()


def test_last_lines_across_read_blocks(state: Path) -> None:
    long = [f"{n:05d}".encode() + b"x" * 30_000 + b"\n" for n in range(6)]
    (state / "web" / OUTPUT_NAME).write_bytes(b"".join(long))
    reader = tail.OutputReader(state, "web")
    assert reader.last(4) == long[2:]
    reader.close()


def test_no_output_yet_is_no_lines(state: Path) -> None:
    reader = tail.OutputReader(state, "web")
    assert reader.last(50) == []
    assert reader.follow() == b""
    reader.close()


def test_follow_starts_after_the_last_lines_and_crosses_rotations(
    state: Path, writer: RotatingFile
) -> None:
    writer.append(lines(0, 4))
    reader = tail.OutputReader(state, "web")
    assert reader.last(2) == lines(3, 4)
    assert reader.follow() == b""
    writer.append(lines(5, 7))
    assert reader.follow() == b"".join(lines(5, 7))
    writer.append(lines(8, 13))  # one rotation: 8-9 to the old file, 10-13 to the new one
    assert reader.follow() == b"".join(lines(8, 13))
    writer.append(lines(14, 45))  # three rotations between two polls
    assert reader.follow() == b"".join(lines(14, 45))
    writer.append(lines(46, 46))
    assert reader.follow() == line(46)
    reader.close()


def test_follow_reads_a_truncated_file_from_its_start(state: Path, writer: RotatingFile) -> None:
    writer.append(lines(0, 5))
    reader = tail.OutputReader(state, "web")
    reader.last(10)
    os.truncate(state / "web" / OUTPUT_NAME, 0)
    with (state / "web" / OUTPUT_NAME).open("ab") as file:
        file.write(line(99))
    assert reader.follow() == line(99)
    reader.close()


def test_follow_waits_for_the_file_to_appear(state: Path) -> None:
    (state / "web").rmdir()
    reader = tail.OutputReader(state, "web")
    assert reader.last(5) == []
    assert reader.follow() == b""
    (state / "web").mkdir(mode=0o700)
    assert reader.follow() == b""
    (state / "web" / OUTPUT_NAME).write_bytes(line(1))
    assert reader.follow() == line(1)
    reader.close()


def test_a_symlinked_output_log_is_not_read(state: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours\n")
    (state / "web" / OUTPUT_NAME).symlink_to(secret)
    reader = tail.OutputReader(state, "web")
    assert reader.last(5) == []
    assert reader.follow() == b""
    reader.close()


def test_names_known_from_the_config_status_or_a_folder(state: Path) -> None:
    (state / "status.json").write_text('{"supervisor": {}, "sidecars": [{"name": "api"}]}')
    assert tail.known_names(state, ["db"]) == {"db", "api", "web"}
    for name in ("db", "api", "web"):
        tail.OutputReader.open(state, name, [sidecar("db")]).close()


@pytest.mark.parametrize("name", ["nope", "../web", "Web", ""])
def test_an_unknown_name_is_a_usage_error(state: Path, name: str) -> None:
    with pytest.raises(tail.UnknownSidecarError) as caught:
        tail.OutputReader.open(state, name, [sidecar("db")])
    assert caught.value.exit_code == 2
    assert "known: db, web" in caught.value.message


def test_a_sidecar_without_an_output_file_says_so(state: Path) -> None:
    with pytest.raises(tail.OutputDisabledError) as caught:
        tail.OutputReader.open(state, "web", [sidecar("web", file=False)])
    assert caught.value.exit_code == 2
    assert "output.file = false" in caught.value.message


def _seen_and_lost(data: bytes) -> tuple[list[int], int]:
    seen, lost = [], 0
    for text in data.decode().splitlines():
        if text.startswith("-- supervisor: "):
            lost += int(text.split()[2])
        else:
            seen.append(int(text.split()[1]))
    return seen, lost


def test_lines_that_rotated_away_unread_are_counted_exactly_in_a_marker(
    state: Path, writer: RotatingFile
) -> None:
    # 100-byte files, 3 backups: 200 lines between two polls rotate far past what is kept.
    writer.append(lines(0, 4))
    reader = tail.OutputReader(state, "web")
    reader.last(5)
    writer.append(lines(5, 204))
    writer.append(lines(205, 209))
    data = reader.follow()
    seen, lost = _seen_and_lost(data)
    assert seen == sorted(seen) and seen[-1] == 209
    assert lost > 0 and len(seen) + lost == 205  # every line read or counted, none twice
    assert b"lines of web's output rotated away unread here" in data
    writer.append(lines(210, 212))
    assert reader.follow() == b"".join(lines(210, 212))  # and nothing lost after that
    reader.close()


def test_a_file_seen_once_is_read_to_its_end_even_after_it_is_deleted(
    state: Path, writer: RotatingFile
) -> None:
    writer.append(lines(0, 2))  # output.log: 0..2, room for seven more
    folder = os.open(state / "web", os.O_RDONLY | os.O_DIRECTORY)
    follower = tail.Follower(folder)
    follower.start_at_end()
    writer.append(lines(3, 5))
    assert follower.poll() == [b"".join(lines(3, 5))]  # the file is open now
    writer.append(lines(6, 60))  # 6..9 end it, then it rotates out of all 3 backups: deleted
    items = follower.poll()
    data = b"".join(i for i in items if isinstance(i, bytes))
    seen, _ = _seen_and_lost(data)
    assert seen[:4] == [6, 7, 8, 9]  # read from the deleted file through its fd
    lost = sum(i.lines or 0 for i in items if isinstance(i, tail.Lost))
    assert lost > 0 and len(seen) + lost == 55
    follower.close()
    os.close(folder)
