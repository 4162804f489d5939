"""Database layer: SQLAlchemy 2.x models, engine/session factory, schema creation."""

from shared.db.imports import ImportJob, ImportStatus
from shared.db.models import (
    ApiKey,
    Base,
    Caption,
    Centroid,
    Embedding,
    EmbeddingKind,
    ImageRecord,
    ImageStatus,
    IndexVersion,
    Membership,
)
from shared.db.session import (
    create_schema,
    make_engine,
    make_read_engine,
    make_read_session_factory,
    make_session_factory,
    read_once_more,
)

__all__ = [
    "ApiKey",
    "Base",
    "Caption",
    "Centroid",
    "Embedding",
    "EmbeddingKind",
    "ImageRecord",
    "ImageStatus",
    "ImportJob",
    "ImportStatus",
    "IndexVersion",
    "Membership",
    "create_schema",
    "make_engine",
    "make_read_engine",
    "make_read_session_factory",
    "make_session_factory",
    "read_once_more",
]
