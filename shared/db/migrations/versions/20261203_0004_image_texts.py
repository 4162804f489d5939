"""Text read in photos: `image_texts`, one row per image, and its full-text objects.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

One row per image (shared/db/texts.py says why). Its `words` column is searched like captions
(shared/db/fulltext.match_photo_text): Postgres, a GIN index on its tsvector; SQLite, an
external-content FTS5 table kept in step by triggers. Photos indexed before this revision
have no row, so the OCR stage reads them when it is asked to (`capsearch doctor --repair`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.migrations.builders import BIG_ID, execute_for_dialect, fulltext

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

IMAGE_TEXTS_FULLTEXT = fulltext("image_texts", "words", rowid="image_id")


def upgrade() -> None:
    op.create_table(
        "image_texts",
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("words", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id"),
    )
    execute_for_dialect(IMAGE_TEXTS_FULLTEXT._asdict())


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS image_texts_fts")  # its triggers go with image_texts
    op.drop_table("image_texts")  # its index goes with it
