"""Database layer: SQLAlchemy 2.x models, engine/session factory (migrations: shared.db.migrate)."""

from shared.db.imports import ImportJob, ImportStatus
from shared.db.models import (
    ApiKey,
    Base,
    Caption,
    Centroid,
    DuplicateMember,
    DuplicatePair,
    Embedding,
    EmbeddingKind,
    ImageRecord,
    ImageStatus,
    IndexVersion,
    Membership,
)
from shared.db.session import (
    make_engine,
    make_read_engine,
    make_read_session_factory,
    make_session_factory,
    read_once_more,
)
from shared.db.texts import ImageText

__all__ = [
    "ApiKey",
    "Base",
    "Caption",
    "Centroid",
    "DuplicateMember",
    "DuplicatePair",
    "Embedding",
    "EmbeddingKind",
    "ImageRecord",
    "ImageStatus",
    "ImageText",
    "ImportJob",
    "ImportStatus",
    "IndexVersion",
    "Membership",
    "make_engine",
    "make_read_engine",
    "make_read_session_factory",
    "make_session_factory",
    "read_once_more",
]
