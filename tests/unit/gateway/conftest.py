"""Gateway fixtures: SQLite + a local blob folder in tmp_path, encoder and search played by
httpx.MockTransport, and a queue that records what it was given."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.app import create_app
from services.gateway.core.context import GatewayContext, close_context
from shared.clients import HttpEncoderClient, HttpIndexClient
from shared.config import Settings
from shared.db import ImageRecord, make_engine, make_session_factory
from shared.db.migrate import upgrade
from shared.storage import LocalBlobStore

REPO_ROOT = Path(__file__).resolve().parents[3]
DIM = 4


def datasets_dir() -> Path:
    configured = Path(os.environ.get("CAPSEARCH_DATASETS_DIR", "../shared/data"))
    return configured if configured.is_absolute() else (REPO_ROOT / configured).resolve()


def coco_jpegs(n: int) -> list[Path]:
    """n real JPEGs from coco-mini-val, or skip the test where the data set is absent."""
    folder = datasets_dir() / "coco-mini-val" / "images"
    paths = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if len(paths) < n:
        pytest.skip(f"needs {n} JPEGs in {folder}")
    return paths


def synthetic_jpeg(size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    img = Image.effect_noise(size, 40 + seed).convert("RGB")
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (no real pixel data)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@dataclass
class FakeBackends:
    """Plays the encoder and search services behind httpx.MockTransport."""

    hits: list[tuple[int, float]] = field(default_factory=list)
    index_version: int | None = 3
    partial: bool = False
    encoder_error: Exception | None = None
    search_status: int = 200
    remove_status: int = 200
    encoded: list[list[str]] = field(default_factory=list)
    searches: list[dict[str, Any]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    rebuilds: int = 0

    def encoder(self, request: httpx.Request) -> httpx.Response:
        if self.encoder_error is not None:
            raise self.encoder_error
        texts = json.loads(request.content)["texts"]
        self.encoded.append(texts)
        vectors = [[1.0] + [0.0] * (DIM - 1) for _ in texts]
        return httpx.Response(200, json={"model": "fake", "dim": DIM, "vectors": vectors})

    def search(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        path = request.url.path
        if path == "/v1/search":
            if self.search_status != 200:
                return httpx.Response(self.search_status, text="boom")
            self.searches.append(body)
            hits = [{"image_id": i, "score": s} for i, s in self.hits][: body["k"]]
            return httpx.Response(200, json={"hits": hits, "index_version": self.index_version,
                                             "exact": True, "partial": self.partial})
        if path == "/v1/index/remove":
            if self.remove_status != 200:
                return httpx.Response(self.remove_status, json={
                    "error": {"code": "not_found", "message": "not in the index"}})
            self.removed.extend(body["image_ids"])
            return httpx.Response(200, json={"count": len(body["image_ids"]), "size": 0})
        if path == "/v1/index/rebuild":
            if request.method == "POST":
                self.rebuilds += 1
            return httpx.Response(202 if request.method == "POST" else 200, json={
                "state": "building" if request.method == "POST" else "done",
                "serving_version": 3, "result": None if request.method == "POST" else {
                    "index_version": 4, "n_vectors": 10, "n_clusters": 2, "exact": False}})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


class FakePhotos:
    """Plays the caption worker's photo → vector task: a fixed vector, or an error."""

    def __init__(self) -> None:
        self.vector = [1.0] + [0.0] * (DIM - 1)
        self.error: Exception | None = None
        self.photos: list[bytes] = []

    async def embed_photo(self, data: bytes) -> NDArray[np.float32]:
        if self.error is not None:
            raise self.error
        self.photos.append(data)
        return np.asarray(self.vector, dtype=np.float32)


class RecordingQueue:
    """A caption queue that remembers every batch, or fails when told to."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.error: Exception | None = None

    def enqueue(self, image_ids: Sequence[int]) -> None:
        if self.error is not None:
            raise self.error
        self.batches.append(list(image_ids))

    @property
    def ids(self) -> list[int]:
        return [i for batch in self.batches for i in batch]


@dataclass
class Gateway:
    """A running gateway under TestClient and everything behind it."""

    client: TestClient
    context: GatewayContext
    backends: FakeBackends
    queue: RecordingQueue
    blob_root: Path
    photos: FakePhotos

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def session_factory(self) -> sessionmaker[Session]:
        return self.context.session_factory

    def upload(self, files: Sequence[tuple[str, bytes]], **data: str) -> httpx.Response:
        parts = [("files", (name, body, "application/octet-stream")) for name, body in files]
        return self.client.post("/v1/images", files=parts, data=data or None)

    def row_count(self) -> int:
        with self.session_factory() as session:
            return session.scalar(select(func.count()).select_from(ImageRecord)) or 0

    def row(self, image_id: int) -> ImageRecord | None:
        with self.session_factory() as session:
            return session.get(ImageRecord, image_id)

    def blob_files(self) -> list[Path]:
        return [p for p in self.blob_root.rglob("*") if p.is_file()]


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """Build a gateway with Settings overrides; everything is closed at teardown."""
    opened: list[tuple[TestClient, GatewayContext]] = []

    def build(**overrides: Any) -> Gateway:
        root = tmp_path / f"gw{len(opened)}"
        # keys and limits have their own tests (test_auth_keys.py, test_rate_limits.py)
        overrides.setdefault("auth", {"enabled": False})
        overrides.setdefault("rate_limit", {"enabled": False})
        settings = Settings(data_dir=root, **overrides)
        root.mkdir()
        engine = make_engine(f"sqlite:///{root / 'capsearch.db'}")
        upgrade(engine)
        backends, queue, photos = FakeBackends(), RecordingQueue(), FakePhotos()
        context = GatewayContext(
            settings=settings,
            session_factory=make_session_factory(engine),
            store=LocalBlobStore(settings.blob_dir),
            encoder=HttpEncoderClient("http://encoder",
                                           transport=httpx.MockTransport(backends.encoder)),
            index=HttpIndexClient("http://search",
                                       transport=httpx.MockTransport(backends.search)),
            queue=queue,
            photos=photos,
        )
        # a Host the gateway answers for (the bound 127.0.0.1; core/origin.py)
        client = TestClient(create_app(context=context), base_url="http://127.0.0.1")
        client.__enter__()
        opened.append((client, context))
        return Gateway(client=client, context=context, backends=backends, queue=queue,
                       blob_root=settings.blob_dir, photos=photos)

    yield build
    for client, context in opened:
        client.__exit__(None, None, None)
        anyio.run(close_context, context)


@pytest.fixture
def gateway(make_gateway: GatewayFactory) -> Gateway:
    return make_gateway()


def assert_error(resp: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is the one error contract with this status; returns its message."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    if code is not None:
        assert body["error"]["code"] == code, body
    return str(body["error"]["message"])
