"""`supervisor logs`: one sidecar's output.log, or several merged in time order."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_OK,
    ConfigError,
)

if TYPE_CHECKING:
    from pathlib import Path

    from supervisor.config import SidecarConfig

from supervisor.cli.common import _fail


def _configured_sidecars(config_arg: str | None) -> tuple[SidecarConfig, ...]:
    """The config's sidecars; none when the default config is missing or broken (an explicit
    -c that cannot be read is an error)."""
    from supervisor import config
    from supervisor.system import paths

    try:
        return config.load(paths.config_path(config_arg)).sidecars
    except ConfigError:
        if config_arg:
            raise
        return ()


def _cmd_logs(args: argparse.Namespace) -> int:
    import time

    from supervisor import control
    from supervisor.control import client
    from supervisor.sidecar import tail

    configured = _configured_sidecars(args.config)
    state_dir = control.resolve_state_dir(args.config, args.state_dir)
    if not client.explicit(args.config, args.state_dir):
        # Like status: the one running daemon's logs (its sidecars are known by its state dir).
        daemons = control.discover()
        if len(daemons) == 1:
            state_dir = daemons[0].state_dir
    if len(args.names) != 1:
        return _merged_logs(args, state_dir, configured)
    reader = tail.OutputReader.open(state_dir, args.names[0], configured)
    out = sys.stdout.buffer
    try:
        out.write(b"".join(reader.last(args.lines)))
        out.flush()
        while args.follow:  # until interrupted (Ctrl-C: exit 130, quietly)
            data = reader.follow()
            if data:
                out.write(data)
                out.flush()
            # A writer that is busy now may rotate soon: look again sooner.
            time.sleep(tail.BUSY_POLL_S if data else tail.POLL_S)
    finally:
        reader.close()
    return EXIT_OK


def _merged_logs(
    args: argparse.Namespace, state_dir: Path, configured: Sequence[SidecarConfig]
) -> int:
    """`logs` with no name (every sidecar) or several: one stream in time order, prefixed."""
    import time

    from supervisor.cli import logmerge
    from supervisor.core import console
    from supervisor.sidecar import tail

    if args.names:
        names = logmerge.ordered(args.names)
    else:
        with_file = [s.name for s in configured if s.output.file]
        off = {s.name for s in configured if not s.output.file}
        known = tail.known_names(state_dir, with_file)
        names = logmerge.ordered([*with_file, *sorted(known - set(with_file) - off)])
        if not names:
            _fail(f"note: no sidecar is configured or known in {state_dir}; nothing to show")
            return EXIT_OK
    readers = {name: tail.OutputReader.open(state_dir, name, configured) for name in names}
    colours = console.colour_wanted(sys.stdout.isatty(), os.environ)
    out = sys.stdout.buffer
    try:
        last = logmerge.merge({n: r.last(args.lines) for n, r in readers.items()}, args.lines)
        out.write(logmerge.render(last, names, colours=colours))
        out.flush()
        follower = logmerge.Follower(names)
        while args.follow:  # until interrupted (Ctrl-C: exit 130, quietly)
            batch = follower.batch({n: r.follow() for n, r in readers.items()})
            if batch:
                out.write(logmerge.render(batch, names, colours=colours))
                out.flush()
            else:
                time.sleep(tail.POLL_S)
    finally:
        for reader in readers.values():
            reader.close()
    return EXIT_OK
