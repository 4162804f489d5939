"""One module per revision, oldest first by `down_revision` (Alembic skips this file)."""
