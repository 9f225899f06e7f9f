"""The console script's entry: the daemon's signals are blocked before anything else runs.

A signal that arrives while the interpreter imports the daemon (a few hundred ms on a cold
cache) stays pending instead of killing it with its default action; the daemon handles it
once its handlers are installed. Commands other than `run` unblock them at once.
"""

from __future__ import annotations


def main() -> int:
    from supervisor.system import signals

    signals.block()
    from supervisor import cli

    return cli.main()
