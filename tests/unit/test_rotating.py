"""The rotating file and its writer thread, on real files: sizes, backups, links, modes, losses."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.system.rotating import LineWriter, PartialWrite, RotatingFile
from tests.support import PYTHON, ROOT


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def numbered(count: int, width: int = 9, start: int = 0) -> list[bytes]:
    """Lines of exactly `width` + 1 bytes: 000000001\\n, ..."""
    return [f"{n:0{width}d}\n".encode() for n in range(start, start + count)]


def chain(tmp_path: Path, name: str, backups: int) -> list[bytes]:
    """Every line kept, oldest file first."""
    lines: list[bytes] = []
    for n in range(backups, 0, -1):
        path = tmp_path / f"{name}.{n}"
        if path.exists():
            lines += path.read_bytes().splitlines(keepends=True)
    return lines + (tmp_path / name).read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("batch", [1, 7, 100])
def test_rotation_keeps_each_file_within_max_bytes_and_the_newest_lines(
    tmp_path: Path, folder: int, batch: int
) -> None:
    file = RotatingFile(folder, "out.log", max_bytes=105, backups=2)
    lines = numbered(100)  # 10 bytes each: 10 lines fit in a file, the 11th rotates
    for start in range(0, len(lines), batch):
        file.append(lines[start : start + batch])
    file.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["out.log", "out.log.1", "out.log.2"]
    for name in names:
        assert (tmp_path / name).stat().st_size <= 105
    kept = chain(tmp_path, "out.log", 2)
    assert kept == lines[-len(kept) :]  # contiguous: the newest lines, in order
    assert len(kept) == 30


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path, folder: int) -> None:
    file = RotatingFile(folder, "out.log", max_bytes=20, backups=3)
    long_line = b"x" * 50 + b"\n"
    file.append([b"short\n", long_line, b"after\n"])
    file.close()
    assert (tmp_path / "out.log.2").read_bytes() == b"short\n"
    assert (tmp_path / "out.log.1").read_bytes() == long_line
    assert (tmp_path / "out.log").read_bytes() == b"after\n"


def test_no_backups_starts_over(tmp_path: Path, folder: int) -> None:
    file = RotatingFile(folder, "out.log", max_bytes=30, backups=0)
    file.append(numbered(7))
    file.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log"]
    assert (tmp_path / "out.log").read_bytes() == b"".join(numbered(7)[6:])


def test_appends_to_an_existing_file_and_counts_its_size(tmp_path: Path, folder: int) -> None:
    (tmp_path / "out.log").write_bytes(b"0123456789\n" * 2)
    file = RotatingFile(folder, "out.log", max_bytes=40, backups=1)
    file.append([b"0123456789\n", b"0123456789\n"])  # 22 + 11 fits, the next does not
    file.close()
    assert (tmp_path / "out.log.1").read_bytes() == b"0123456789\n" * 3
    assert (tmp_path / "out.log").read_bytes() == b"0123456789\n"


def test_files_are_0600_whatever_the_umask_or_an_old_mode(tmp_path: Path, folder: int) -> None:
    (tmp_path / "old.log").write_bytes(b"")
    os.chmod(tmp_path / "old.log", 0o644)
    previous = os.umask(0)
    try:
        for name in ("new.log", "old.log"):
            file = RotatingFile(folder, name, max_bytes=1024, backups=1)
            file.append([b"line\n"])
            file.close()
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_a_planted_symlink_is_never_written_through(tmp_path: Path, folder: int) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    (tmp_path / "out.log").symlink_to(target)
    file = RotatingFile(folder, "out.log", max_bytes=1024, backups=1)
    with pytest.raises(PartialWrite) as caught:
        file.append([b"line\n"])
    assert caught.value.written == 0
    assert caught.value.errno == errno.ELOOP
    file.close()
    assert target.read_bytes() == b"precious\n"


def test_rotation_replaces_a_planted_backup_link_rather_than_its_target(
    tmp_path: Path, folder: int
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious\n")
    (tmp_path / "out.log.1").symlink_to(target)
    file = RotatingFile(folder, "out.log", max_bytes=12, backups=1)
    file.append([b"first line\n", b"second line\n"])
    file.close()
    assert target.read_bytes() == b"precious\n"
    assert not (tmp_path / "out.log.1").is_symlink()
    assert (tmp_path / "out.log.1").read_bytes() == b"first line\n"


def test_a_fifo_in_its_place_is_refused_without_blocking(tmp_path: Path, folder: int) -> None:
    os.mkfifo(tmp_path / "out.log")
    file = RotatingFile(folder, "out.log", max_bytes=1024, backups=1)
    with pytest.raises(PartialWrite):
        file.append([b"line\n"])
    file.close()


def test_a_deleted_file_is_recreated_instead_of_written_unseen(tmp_path: Path, folder: int) -> None:
    file = RotatingFile(folder, "out.log", max_bytes=1024, backups=1)
    file.append([b"one\n"])
    (tmp_path / "out.log").unlink()
    file.append([b"two\n"])
    file.close()
    assert (tmp_path / "out.log").read_bytes() == b"two\n"


def test_the_directory_fd_is_its_own(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    file = RotatingFile(fd, "out.log", max_bytes=1024, backups=1)
    os.close(fd)  # the caller's copy
    file.append([b"still works\n"])
    file.close()
    assert (tmp_path / "out.log").read_bytes() == b"still works\n"


# -- the writer thread ---------------------------------------------------------------------------


def gap(count: int, error: str | None) -> bytes:
    return f"[{count} lost: {error or 'behind'}]\n".encode()


def test_writer_writes_every_line_in_order_and_close_flushes(tmp_path: Path, folder: int) -> None:
    writer = LineWriter(RotatingFile(folder, "out.log", max_bytes=1 << 20, backups=1), gap_line=gap)
    lines = numbered(5000)
    assert all(writer.put(line) for line in lines)
    assert writer.close(10.0)
    assert (tmp_path / "out.log").read_bytes() == b"".join(lines)
    assert writer.dropped == 0


def test_writer_drops_what_does_not_fit_its_queue_and_marks_the_gap(
    tmp_path: Path, folder: int
) -> None:
    writer = LineWriter(
        RotatingFile(folder, "out.log", max_bytes=1 << 20, backups=1),
        gap_line=gap,
        max_pending_bytes=16,
    )
    assert writer.put(b"kept\n")
    assert not writer.put(b"a line longer than the whole queue\n")
    assert not writer.put(b"and another one, also too long\n")
    assert writer.dropped == 2
    assert writer.put(b"kept again\n")
    assert writer.close(10.0)
    assert not writer.put(b"after close\n")
    assert writer.dropped == 3
    assert (tmp_path / "out.log").read_bytes().splitlines() == [
        b"kept",
        b"[2 lost: behind]",
        b"kept again",
    ]


def test_writer_without_lines_closes_at_once(tmp_path: Path, folder: int) -> None:
    writer = LineWriter(RotatingFile(folder, "out.log", max_bytes=1024, backups=1))
    assert writer.close(1.0)
    assert not (tmp_path / "out.log").exists()  # nothing to write, nothing created


# A real write error without root: RLIMIT_FSIZE makes writes past the limit fail with EFBIG
# (Python ignores SIGXFSZ), in a child process so the limit touches nothing else.
FSIZE_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, sys
    from supervisor.system.rotating import LineWriter, RotatingFile
    folder = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
    gap = lambda count, error: f"[{count} lost: {error}]\\n".encode()
    file = RotatingFile(folder, "out.log", max_bytes=1 << 20, backups=1)
    writer = LineWriter(file, gap_line=gap)
    resource.setrlimit(resource.RLIMIT_FSIZE, (105, resource.RLIM_INFINITY))
    for n in range(30):
        writer.put(f"{n:09d}\\n".encode())  # 10 bytes each: 10 whole lines fit, and a half
    assert writer.flush(10.0)
    failing = {"dropped": writer.dropped, "error": writer.error}
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    writer.put(b"space again\\n")
    assert writer.close(10.0)
    print(json.dumps({"failing": failing, "dropped": writer.dropped, "error": writer.error}))
    """
)


def test_writer_counts_lines_a_failing_disk_loses_then_marks_the_gap(tmp_path: Path) -> None:
    result = subprocess.run(
        [PYTHON, "-c", FSIZE_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    report = json.loads(result.stdout)
    assert report["failing"] == {"dropped": 20, "error": os.strerror(errno.EFBIG)}
    assert report["dropped"] == 20  # nothing more was lost once writes worked again
    assert report["error"] is None
    kept = (tmp_path / "out.log").read_bytes().splitlines()
    # Ten whole lines, the torn half of the eleventh (ended before the next line), the gap.
    assert kept[:10] == [f"{n:09d}".encode() for n in range(10)]
    assert kept[10] == b"00000"
    assert kept[11:] == [b"[20 lost: " + os.strerror(errno.EFBIG).encode() + b"]", b"space again"]
