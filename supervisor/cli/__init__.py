"""The command line: the only place that prints for users and chooses exit codes.

Heavy modules (anyio, psutil, structlog) are imported inside the command handlers so that quick
commands such as `status` start fast. One module per group of commands; `main` runs them.
"""

from supervisor.cli.main import main
from supervisor.cli.parser import build_parser

__all__ = ["build_parser", "main"]
