"""Fixtures for the caption tests: real photos, the real models, SQLite + a local blob folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.caption.captioners.tags import TagsCaptioner
from services.caption.pipeline import PipelineDeps
from services.encoder.encoder import BertTextEncoder
from shared.clients import SyncEncoder
from shared.config import Settings
from shared.db import ImageRecord, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.schemas import IndexChangeResponse
from shared.storage import LocalBlobStore, original_key

REPO_ROOT = Path(__file__).resolve().parents[3]


def datasets_dir() -> Path:
    """`CAPSEARCH_DATASETS_DIR` or the settings' default, relative to the repository root."""
    path = Path(os.environ.get("CAPSEARCH_DATASETS_DIR") or Settings().datasets_dir)
    return path if path.is_absolute() else REPO_ROOT / path


@pytest.fixture(scope="session")
def coco_images() -> list[Path]:
    folder = datasets_dir() / "coco-mini-val" / "images"
    if not folder.is_dir():
        pytest.skip(f"no photos at {folder}")
    return sorted(folder.glob("*.jpg"))[:6]


@pytest.fixture(scope="session")
def tags_captioner() -> TagsCaptioner:
    captioner = TagsCaptioner(batch_size=4, device="cpu")
    captioner.load()
    return captioner


@pytest.fixture(scope="session")
def text_encoder() -> BertTextEncoder:
    encoder = BertTextEncoder(device="cpu")
    encoder.load()
    return encoder


class FakeIndex:
    """An in-memory stand-in for the search service that records every add()."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], NDArray[np.float32]]] = []
        self.vectors: dict[int, NDArray[np.float32]] = {}

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]) -> IndexChangeResponse:
        self.calls.append((list(image_ids), np.asarray(vectors)))
        self.vectors.update(zip(image_ids, vectors, strict=True))
        return IndexChangeResponse(count=len(image_ids), size=len(self.vectors))


class CountingEncoder:
    """Wraps an encoder; counts calls and can be told to fail the next calls."""

    def __init__(self, inner: SyncEncoder) -> None:
        self.inner = inner
        self.calls = 0
        self.texts: list[str] = []
        self.fail_with: Exception | None = None
        self.failures_left = 0

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        self.calls += 1
        self.texts.extend(texts)
        if self.failures_left and self.fail_with is not None:
            self.failures_left -= 1
            raise self.fail_with
        return self.inner.encode(texts)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # the pipeline mechanics with the tags caption alone (fused needs the head: own tests)
    return Settings(data_dir=tmp_path, caption_batch_size=4, device="cpu",
                    representation="caption")


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.sqlalchemy_url)
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def store(settings: Settings) -> LocalBlobStore:
    return LocalBlobStore(settings.blob_dir)


@pytest.fixture
def index() -> FakeIndex:
    return FakeIndex()


@pytest.fixture
def encoder(text_encoder: BertTextEncoder) -> CountingEncoder:
    return CountingEncoder(text_encoder)


@pytest.fixture
def deps(settings: Settings, session_factory: sessionmaker[Session], store: LocalBlobStore,
         tags_captioner: TagsCaptioner, encoder: CountingEncoder,
         index: FakeIndex) -> PipelineDeps:
    return PipelineDeps(settings=settings, session_factory=session_factory, store=store,
                        captioner=tags_captioner, encoder=encoder, index=index)


def add_image(session_factory: sessionmaker[Session], store: LocalBlobStore, data: bytes,
              *, put_blob: bool = True, name: str = "photo.jpg") -> int:
    """What the gateway does at upload: the original in the blob store, a `pending` row."""
    sha256 = hashlib.sha256(data).hexdigest()
    if put_blob:
        store.put(original_key(sha256), data)
    with session_factory.begin() as session:
        record = ImageRecord(sha256=sha256, filename=name, format="JPEG", width=1, height=1,
                             size_bytes=len(data))
        session.add(record)
        session.flush()
        return record.id


@pytest.fixture
def add_photos(session_factory: sessionmaker[Session], store: LocalBlobStore,
               coco_images: list[Path]) -> Callable[[int], list[int]]:
    """Add the first `n` COCO photos as pending images; returns their ids."""

    def add(n: int) -> list[int]:
        return [add_image(session_factory, store, path.read_bytes(), name=path.name)
                for path in coco_images[:n]]

    return add


def statuses(session_factory: sessionmaker[Session], ids: Sequence[int]) -> dict[int, str]:
    with session_factory() as session:
        rows = session.execute(select(ImageRecord.id, ImageRecord.status)
                               .where(ImageRecord.id.in_(list(ids)))).all()
    return {row.id: row.status for row in rows}
