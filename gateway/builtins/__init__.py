"""Built-in plugins, loaded like any other: the deterministic backend, routing policies."""
