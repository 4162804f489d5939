"""The progress of a bulk import (`POST /v1/imports`), kept in the database so any gateway
replica can answer `GET /v1/imports/{id}`."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, BigId, utcnow


class ImportStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class ImportJob(Base):
    """One import of a server-side folder or a bucket prefix, and how far it got."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # folder | s3
    location: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), default=ImportStatus.queued, index=True)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None while listing
    processed: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[str] = mapped_column(Text, default="")  # the first few, one per line
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # why the whole job failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
