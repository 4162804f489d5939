"""Alembic's environment and the revisions (`versions/`): see shared/db/migrate.py."""
