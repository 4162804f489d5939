"""Near-duplicate photos: confirmed pairs and each photo's group.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Two new tables, nothing else touched: `duplicate_pairs` (two images judged the same and their
cosine) and `duplicate_members` (an image's group). The duplicate vectors themselves are
`embeddings` rows of kind `dup`, which needs no schema change. Photos ingested before this
revision have no such rows: `capsearch duplicates --backfill` computes them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.migrations.builders import BIG_ID

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

def upgrade() -> None:
    op.create_table(
        "duplicate_pairs",
        sa.Column("image_a", BIG_ID, nullable=False),
        sa.Column("image_b", BIG_ID, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["image_a"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_b"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_a", "image_b"),
    )
    op.create_index("ix_duplicate_pairs_image_b", "duplicate_pairs", ["image_b"])
    op.create_table(
        "duplicate_members",
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("group_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id"),
    )
    op.create_index("ix_duplicate_members_group_id", "duplicate_members", ["group_id"])


def downgrade() -> None:
    op.drop_table("duplicate_members")
    op.drop_table("duplicate_pairs")
