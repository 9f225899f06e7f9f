"""The OS layer: processes, exit handles, sockets, files, logs; platform specifics live here."""
