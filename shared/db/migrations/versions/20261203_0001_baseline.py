"""Baseline: the schema as `create_all` made it before migrations, full-text objects included.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-03

Frozen: later model changes get their own revision, never an edit here. Every statement is
"if not exists", so this revision also adopts a database that an older capsearch created
without migrations (tables, then indexes and full-text objects added at later starts).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.migrations.builders import BIG_ID, execute_for_dialect, fulltext

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# caption text searchable as text (shared/db/fulltext.py); an adopted database is indexed anew
CAPTIONS_FULLTEXT = fulltext("captions", "text", rowid="id")
SQLITE_REBUILD = "INSERT INTO captions_fts(captions_fts) VALUES ('rebuild')"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prefix"),
        if_not_exists=True,
    )
    op.create_table(
        "images",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
        if_not_exists=True,
    )
    add_index("ix_images_status", "images", ["status"])
    op.create_table(
        "imports",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    add_index("ix_imports_status", "imports", ["status"])
    op.create_table(
        "index_versions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("embedding_kind", sa.String(length=32), nullable=False),
        sa.Column("embedding_model", sa.String(length=128), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("n_vectors", sa.BigInteger(), nullable=False),
        sa.Column("n_clusters", sa.Integer(), nullable=False),
        sa.Column("pca_components", sa.Integer(), nullable=False),
        sa.Column("pca_mean", sa.LargeBinary(), nullable=True),
        sa.Column("pca_matrix", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    add_index("ix_index_versions_active", "index_versions", ["active"])
    op.create_table(
        "captions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("image_id", "model", name="uq_caption_image_model"),
        if_not_exists=True,
    )
    add_index("ix_captions_image_id", "captions", ["image_id"])
    op.create_table(
        "centroids",
        sa.Column("index_version_id", BIG_ID, nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["index_version_id"], ["index_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("index_version_id", "cluster_id"),
        if_not_exists=True,
    )
    op.create_table(
        "embeddings",
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("image_id", "kind", "model"),
        if_not_exists=True,
    )
    add_index("ix_embeddings_kind_model_created", "embeddings", ["kind", "model", "created_at"])
    op.create_table(
        "memberships",
        sa.Column("index_version_id", BIG_ID, nullable=False),
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["index_version_id"], ["index_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("index_version_id", "image_id"),
        if_not_exists=True,
    )
    add_index("ix_memberships_version_cluster", "memberships", ["index_version_id", "cluster_id"])
    create_fulltext()


def add_index(name: str, table: str, columns: list[str]) -> None:
    op.create_index(name, table, columns, unique=False, if_not_exists=True)


def create_fulltext() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite" and sa.inspect(bind).has_table("captions_fts"):
        return  # an adopted database whose FTS5 table an older capsearch made
    execute_for_dialect({"postgresql": CAPTIONS_FULLTEXT.postgresql,
                         "sqlite": (*CAPTIONS_FULLTEXT.sqlite, SQLITE_REBUILD)})


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS captions_fts")  # its triggers go with captions
    for table in ("memberships", "embeddings", "centroids", "captions", "index_versions",
                  "imports", "images", "api_keys"):
        op.drop_table(table)  # indexes go with their table
