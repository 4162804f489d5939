"""Tables: images, captions, embeddings (per-image representations), index versions,
centroids, memberships, near-duplicate pairs and groups. Portable between SQLite (embedded)
and Postgres."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer, "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """A stored instant as an aware UTC datetime: SQLite hands them back naive (written in UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class ImageStatus(enum.StrEnum):
    pending = "pending"
    captioned = "captioned"
    indexed = "indexed"
    failed = "failed"


class EmbeddingKind(enum.StrEnum):
    """What an `embeddings` row holds for its image (all but `dup` live in the text encoder's
    space). `caption` is the vector the search index serves, whatever the representation
    setting made it (caption text, image or fused: services/caption/pipeline.py)."""

    caption = "caption"
    # the caption's own text vector beside a fused one: written by versions before 2026-12
    # (nothing read it; the fused vector does not use it), kept so their rows stay valid
    text = "text"
    image = "image"  # the projection head's image vector (representations `image` and `fused`)
    # the CNN's GeM-pooled features (not the text space): near-duplicates (shared/duplicates.py)
    dup = "dup"


# `sort=taken` reads `ORDER BY taken_at DESC NULLS LAST, id DESC` (undated photos after) from this
# index, made by revision 0002 per dialect, outside the models (as the full-text objects):
# Postgres needs NULLS LAST in the index, which SQLite cannot declare (its NULLs already sort
# last in a descending order). It also serves the `taken_from`/`taken_to` range.
TAKEN_ORDER_INDEX = "ix_images_taken_at_id"


class ImageRecord(Base):
    """One uploaded photo; `sha256` is its content address (a re-upload finds this row)."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    filename: Mapped[str] = mapped_column(String(512), default="")
    source: Mapped[str] = mapped_column(String(1024), default="upload")
    format: Mapped[str] = mapped_column(String(16))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=ImageStatus.pending, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # when the photo was taken (EXIF, shared/capture.py); None: no usable date in the file
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Caption(Base):
    """A caption of one image by one captioner (model + version)."""

    __tablename__ = "captions"
    __table_args__ = (UniqueConstraint("image_id", "model", name="uq_caption_image_model"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True, nullable=False
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    model_version: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Embedding(Base):
    """A per-image representation keyed by (image, kind, model); `vector` is float32 bytes."""

    __tablename__ = "embeddings"
    # search replicas follow the vectors written since they last looked (IndexService.follow)
    __table_args__ = (Index("ix_embeddings_kind_model_created", "kind", "model", "created_at"),)

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # an EmbeddingKind
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexVersion(Base):
    """One fitted PCA + K-means index; exactly one version is `active` at a time."""

    __tablename__ = "index_versions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16), default="building")  # building|ready|failed
    active: Mapped[bool] = mapped_column(default=False, index=True)
    embedding_kind: Mapped[str] = mapped_column(String(32))
    embedding_model: Mapped[str] = mapped_column(String(128))
    dim: Mapped[int] = mapped_column(Integer)
    n_vectors: Mapped[int] = mapped_column(BigInteger, default=0)
    n_clusters: Mapped[int] = mapped_column(Integer, default=0)
    pca_components: Mapped[int] = mapped_column(Integer, default=0)
    pca_mean: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    pca_matrix: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Centroid(Base):
    """A K-means centroid of one index version, in PCA space (float32 bytes)."""

    __tablename__ = "centroids"

    index_version_id: Mapped[int] = mapped_column(
        ForeignKey("index_versions.id", ondelete="CASCADE"), primary_key=True
    )
    cluster_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Membership(Base):
    """Which cluster of an index version an image belongs to."""

    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_version_cluster", "index_version_id", "cluster_id"),)

    index_version_id: Mapped[int] = mapped_column(
        ForeignKey("index_versions.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    cluster_id: Mapped[int] = mapped_column(Integer, nullable=False)


class DuplicatePair(Base):
    """Two photos judged the same (`shared/duplicates.py`): ids ascending, their cosine."""

    __tablename__ = "duplicate_pairs"

    image_a: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    image_b: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    score: Mapped[float] = mapped_column(Float, nullable=False)


class DuplicateMember(Base):
    """An image's near-duplicate group: the smallest image id the group has held."""

    __tablename__ = "duplicate_members"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(BigId, nullable=False, index=True)


class ApiKey(Base):
    """A gateway API key: only its sha256 is stored; `prefix` finds it and names it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[str] = mapped_column(String(128), nullable=False)  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
