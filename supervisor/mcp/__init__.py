"""`supervisor mcp`: a Model Context Protocol server over stdio, for coding agents.

Tools: status, logs, start, stop, restart, wait (bounded) and diagnose_port (read-only: it never
signals anything). Each result is a JSON object (structuredContent, also given as text) after a
one-line summary. The daemon is looked up at each call, so the server outlives daemon restarts;
a tool's error is a result with isError and the SupervisorError's fields.

Built on the official MCP Python SDK, an optional extra (`pip install 'sidecar-supervisor[mcp]'`),
imported only by `serve` (supervisor.mcp.server): neither the daemon nor the other commands pay.
"""

from __future__ import annotations

from supervisor.errors import EXIT_USAGE, SupervisorError
from supervisor.mcp.tools import KnownLedgers, Target


class McpUnavailableError(SupervisorError):
    """`supervisor mcp` without the MCP SDK installed."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"supervisor mcp needs the MCP Python SDK ({reason}); "
            "install it with: pip install 'sidecar-supervisor[mcp]'"
        )


def serve(config: str | None, state_dir: str | None, known: KnownLedgers) -> int:
    """Serve MCP on stdin/stdout until the client closes it."""
    try:
        from supervisor.mcp import server
    except ImportError as exc:
        raise McpUnavailableError(str(exc)) from None
    import anyio

    anyio.run(server.build(Target(config, state_dir), known).run_stdio_async)
    return 0
