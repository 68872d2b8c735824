"""Usage records and where they are kept: SQLite, Redis, spool, mirror, reports."""
