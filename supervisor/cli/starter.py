"""`supervisor init`: write the commented starter config (the package's example.toml), never over
anything that exists.

The text is package data (`supervisor/config/example.toml`), so a wheel or pipx install has it;
the repository's `config/example.toml` is the same text (a test keeps them equal).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
from importlib import resources
from pathlib import Path

from supervisor.errors import EXIT_USAGE, SupervisorError
from supervisor.system.statedir import DIR_MODE, write_durably

FILE_MODE = 0o600  # a config may carry secrets in a sidecar's `env`


class InitError(SupervisorError):
    """The starter config cannot be written where asked (it exists, or the folder is unusable)."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path, problem: str, remedy: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path} {problem}; {remedy}")


def example_text(*, minimal: bool = False) -> str:
    """The starter config: every key with its default, supervising the bundled demo; or with
    `minimal`, two sidecars and only the keys most configs need (`minimal.toml`)."""
    name = "minimal.toml" if minimal else "example.toml"
    return resources.files("supervisor.config").joinpath(name).read_text("utf-8")


def write(path: Path, *, minimal: bool = False) -> None:
    """Write the starter to `path` (parent folders created), atomically, never replacing a file.

    The text goes to a temporary file that is then hard-linked into place: `link` fails if
    anything (even a dangling symlink) is at `path`, so nothing is ever overwritten and no
    half-written config can appear.
    """
    if os.path.lexists(path):
        raise _exists(path)
    try:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    data = example_text(minimal=minimal).encode("utf-8")
    tmp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        _write_new(tmp, data)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from None
    try:
        _link(tmp, path, data)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise _unwritable(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _write_new(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist), write `data` and fsync; nothing is left on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        try:
            write_durably(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _link(tmp: Path, path: Path, data: bytes) -> None:
    try:
        os.link(tmp, path, follow_symlinks=False)
    except OSError as exc:
        # A file system without hard links (FAT, some network mounts): create it exclusively.
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        _write_new(path, data)


def _exists(path: Path) -> InitError:
    return InitError(
        path,
        "already exists (init never overwrites a config)",
        f'edit it (check it with "supervisor check-config -c {shlex.quote(str(path))}") '
        "or give another PATH",
    )


def _unwritable(path: Path, exc: OSError) -> InitError:
    problem = f"cannot be written ({exc.strerror or exc})"
    return InitError(path, problem, "check its permissions or give another PATH")
