"""The daemon: task group, signals, start-up, reload, shutdown; what the sidecars share."""
