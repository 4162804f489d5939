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

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

POSTGRES_FULLTEXT = (
    "CREATE INDEX IF NOT EXISTS ix_image_texts_words_fts ON image_texts "
    "USING gin (to_tsvector('english'::regconfig, words))",
)
SQLITE_FULLTEXT = (
    "CREATE VIRTUAL TABLE image_texts_fts USING fts5("
    "words, content='image_texts', content_rowid='image_id', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS image_texts_fts_ai AFTER INSERT ON image_texts BEGIN "
    "INSERT INTO image_texts_fts(rowid, words) VALUES (new.image_id, new.words); END",
    "CREATE TRIGGER IF NOT EXISTS image_texts_fts_ad AFTER DELETE ON image_texts BEGIN "
    "INSERT INTO image_texts_fts(image_texts_fts, rowid, words) "
    "VALUES ('delete', old.image_id, old.words); END",
    "CREATE TRIGGER IF NOT EXISTS image_texts_fts_au AFTER UPDATE ON image_texts BEGIN "
    "INSERT INTO image_texts_fts(image_texts_fts, rowid, words) "
    "VALUES ('delete', old.image_id, old.words); "
    "INSERT INTO image_texts_fts(rowid, words) VALUES (new.image_id, new.words); END",
)


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
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for ddl in POSTGRES_FULLTEXT:
            op.execute(ddl)
    elif bind.dialect.name == "sqlite":
        for ddl in SQLITE_FULLTEXT:
            op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS image_texts_fts")  # its triggers go with image_texts
    op.drop_table("image_texts")  # its index goes with it
