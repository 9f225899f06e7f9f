"""The pure core: states and transitions, reload plans, status documents and renderings."""
