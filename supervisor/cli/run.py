"""Commands that need no running daemon: run, check-config, init, service, completion."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    SupervisorError,
)

if TYPE_CHECKING:
    from pathlib import Path

    from supervisor import service
    from supervisor.config import SidecarConfig

from supervisor.cli.common import _fail, _out


def _cmd_check_config(args: argparse.Namespace) -> int:
    from supervisor import config
    from supervisor.system import paths

    path = paths.config_path(args.config)
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        for line in exc.lines():
            _fail(line)
        return exc.exit_code
    from supervisor.cli import checks

    # Valid, but could each sidecar start here? Its program on its PATH, its cwd, its files.
    found = [problem for sidecar in cfg.sidecars for problem in checks.problems(sidecar)]
    for problem in found:
        _fail(f"config {path}: {problem}")
    _service_notes(cfg.sidecars)
    if found:
        return EXIT_USAGE
    _out(f"{path}: valid; {cfg.summary()}")
    return EXIT_OK


def _service_notes(sidecars: Sequence[SidecarConfig]) -> None:
    """With a user service installed: the programs its minimal PATH would not find (notes)."""
    from supervisor import service

    kind = service.default_kind()
    try:
        installed = (service.service_dir(kind, service.home()) / service.file_name(kind)).exists()
    except SupervisorError:
        return
    if installed:
        for line in service.path_notes(kind, sidecars):
            _fail(f"note: under the installed {kind} service: {line}")


def _cmd_run(args: argparse.Namespace) -> int:
    if sys.platform == "win32":
        from supervisor.errors import UnsupportedPlatformError

        raise UnsupportedPlatformError(sys.platform)
    from supervisor.system import signals

    # Before the slow imports: until the daemon's handlers are installed, its signals stay
    # pending instead of killing it.
    signals.block()
    from supervisor.daemon import main as daemon

    return daemon.main(
        daemon.RunOptions(
            config=args.config,
            state_dir=args.state_dir,
            log_format=args.log_format,
            log_level=args.log_level,
            exit_with_parent=bool(args.exit_with_parent),
            interactive=not args.non_interactive,
            log_file=args.log_file,
        )
    )


def _cmd_service(args: argparse.Namespace) -> int:
    from supervisor import service

    kind = service.Kind(args.kind) if args.kind else service.default_kind()
    match args.action:
        case "print":
            spec = service.spec_for(args.config)
            sys.stdout.write(service.render(kind, spec))
            _path_notes(kind, spec.config)
        case "install":
            spec = service.spec_for(args.config)
            lines = service.install(kind, spec, force=args.force)
            _out("\n".join(lines))
            _path_notes(kind, spec.config)
        case "uninstall":
            _out("\n".join(service.uninstall(kind, service.home(), force=args.force)))
    return EXIT_OK


def _path_notes(kind: service.Kind, config_path: Path) -> None:
    """A note on stderr for each sidecar command the service's minimal PATH would not find."""
    from supervisor import config, service

    for line in service.path_notes(kind, config.load(config_path).sidecars):
        _fail(f"note: {line}")


def _cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from supervisor.cli import starter
    from supervisor.errors import PathError
    from supervisor.system import paths

    try:
        path = Path(args.path).expanduser().absolute() if args.path else paths.config_path(None)
    except RuntimeError:  # ~user of an unknown user, or no home directory
        raise PathError("PATH", args.path, "its ~ cannot be expanded") from None
    starter.write(path, minimal=args.minimal)
    quoted = shlex.quote(str(path))
    if args.minimal:
        _out(f"wrote {path}: two sidecars (the bundled demo), only the keys most configs need")
        _out("replace their name, command and port with your programs'")
    else:
        _out(f"wrote {path}: a commented starter config (every key, with its default)")
        _out("it supervises the bundled demo sidecar; replace that [[sidecar]] with your programs")
    _out(f"check it:  supervisor check-config -c {quoted}")
    _out(f"run it:    supervisor run -c {quoted}")
    return EXIT_OK
