"""Request/response models shared by the services (inputs and public outputs kept apart)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

# ---- encoder service -------------------------------------------------------------------------


class EncodeRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, max_length=1024)


class EncodeResponse(BaseModel):
    model: str
    dim: int
    vectors: list[list[float]]


# ---- search service --------------------------------------------------------------------------


class IndexItem(BaseModel):
    image_id: int
    vector: list[float]


class IndexAddRequest(BaseModel):
    items: list[IndexItem] = Field(..., min_length=1, max_length=10_000)


class IndexRemoveRequest(BaseModel):
    image_ids: list[int] = Field(..., min_length=1, max_length=10_000)


class IndexChangeResponse(BaseModel):
    count: int
    size: int


class SearchRequest(BaseModel):
    vector: list[float] = Field(..., min_length=1)
    k: int = Field(10, ge=1, le=1000)
    nprobe: int | None = Field(None, ge=1)


class SearchHit(BaseModel):
    image_id: int
    score: float


class SearchResponse(BaseModel):
    hits: list[SearchHit]
    index_version: int | None
    exact: bool
    partial: bool = False


class RebuildResponse(BaseModel):
    index_version: int | None
    n_vectors: int
    n_clusters: int
    exact: bool


class IndexStats(BaseModel):
    size: int
    dim: int | None
    index_version: int | None
    n_clusters: int
    exact: bool


# ---- gateway (public API) --------------------------------------------------------------------


class ImagePublic(BaseModel):
    id: int
    sha256: str
    status: str
    error: str | None = None
    caption: str | None = None
    filename: str
    source: str
    format: str
    width: int
    height: int
    size_bytes: int
    created_at: datetime
    updated_at: datetime
    content_url: str
    thumbnail_url: str
    status_url: str


class UploadItem(BaseModel):
    id: int
    filename: str
    status: str
    duplicate: bool
    status_url: str


class UploadResponse(BaseModel):
    images: list[UploadItem]


class SearchResult(BaseModel):
    id: int
    score: float
    caption: str | None
    filename: str
    content_url: str
    thumbnail_url: str


class SearchResults(BaseModel):
    query: str
    k: int
    results: list[SearchResult]
    index_version: int | None = None
    partial: bool = False


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}
