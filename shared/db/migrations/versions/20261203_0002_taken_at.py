"""Capture date: `images.taken_at` (EXIF DateTimeOriginal, null when absent) and its index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03

Existing rows get null: `capsearch doctor --backfill-taken` reads their stored originals and
fills it (docs/deploy.md). Adding a nullable column rewrites no row, in Postgres or SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# `sort=taken` is `ORDER BY taken_at DESC NULLS LAST, id DESC` (shared/db/models.py names the
# index TAKEN_ORDER_INDEX). Postgres sorts NULLs first in a descending order unless told, so its
# index says NULLS LAST; SQLite cannot say it in an index, and needs not: its NULLs sort last in
# a descending order already.
INDEX = "ix_images_taken_at_id"
ORDER = {
    "postgresql": "taken_at DESC NULLS LAST, id DESC",
    "sqlite": "taken_at DESC, id DESC",
}


def upgrade() -> None:
    op.add_column("images", sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True))
    dialect = op.get_bind().dialect.name
    op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON images "
               f"({ORDER.get(dialect, 'taken_at, id')})")


def downgrade() -> None:
    op.execute(f"DROP INDEX IF EXISTS {INDEX}")
    op.drop_column("images", "taken_at")
