"""One sidecar: its restart loop, one attempt, probes, health, output, the inherited socket."""
