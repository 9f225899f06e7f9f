"""sidecar-supervisor: an async supervisor for local helper servers (sidecars)."""

__version__ = "0.1.0"
