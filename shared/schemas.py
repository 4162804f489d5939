"""Request/response models shared by the services (inputs and public outputs kept apart)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

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
    failed_shards: list[int] = []  # shards that failed or timed out (partial results)


class RebuildResponse(BaseModel):
    index_version: int | None
    n_vectors: int
    n_clusters: int
    exact: bool


class RebuildStatus(BaseModel):
    """A background rebuild: `building` while the old version serves, then `done` or
    `failed` (the old version still serving)."""

    state: Literal["idle", "building", "done", "failed"]
    started_at: datetime | None = None
    finished_at: datetime | None = None
    serving_version: int | None = None
    result: RebuildResponse | None = None
    error: str | None = None


class IndexStats(BaseModel):
    size: int
    dim: int | None
    index_version: int | None
    n_clusters: int
    exact: bool
    shard_id: int = 0
    n_shards: int = 1
    storage: str = "float32"
    memory_bytes: int = 0
    # drift since the serving version was built: when a rebuild is due
    vectors_at_build: int | None = None
    added_since_build: int = 0
    removed_since_build: int = 0
    drift: float | None = None  # (added + removed) / vectors_at_build
    imbalance: float | None = None  # largest cluster / mean cluster (this shard's clusters)
    rebuild_due: bool = False
    rebuild: RebuildStatus | None = None


# ---- gateway (public API) --------------------------------------------------------------------


class ImagePublic(BaseModel):
    id: int
    sha256: str
    status: str
    error: str | None = None
    caption: str | None = None
    ocr_text: str | None = Field(None, description=(
        "text read in the photo (OCR), one line per line; null until it is read (or with OCR "
        "off), \"\" when the photo has none. Its words find the photo in search."))
    ocr_confidence: float | None = Field(None, description=(
        "the recogniser's confidence in ocr_text (0-1): its lines' mean weighted by length"))
    filename: str
    source: str
    format: str
    width: int
    height: int
    size_bytes: int
    created_at: datetime  # uploaded
    taken_at: datetime | None = None  # captured (EXIF DateTimeOriginal); None: no usable date
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
    score: float  # cosine similarity of the query and the caption vectors, whatever the order
    caption: str | None
    filename: str
    content_url: str
    thumbnail_url: str
    source: str | None = None
    created_at: datetime | None = None  # uploaded
    taken_at: datetime | None = None  # captured (EXIF); None: no usable date in the file
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None


class SearchResults(BaseModel):
    query: str
    k: int
    results: list[SearchResult]
    index_version: int | None = None
    partial: bool = False
    failed_shards: list[int] = []
    sort: str = "relevance"  # relevance | date (uploaded) | taken (captured)
    hybrid: bool = False  # caption full-text matches fused into the order
    next_cursor: str | None = None  # pass as `cursor` for the next page; None on the last


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


# ---- gateway: listing, find similar, sources, bulk imports ------------------------------------


MAX_LOOKUP_IDS = 1000
IMAGE_ID_MAX = 2**63 - 1


class ImageLookup(BaseModel):
    """`POST /v1/images/lookup`: up to 1,000 image ids whose records to read in one call."""

    ids: list[Annotated[int, Field(ge=1, le=IMAGE_ID_MAX)]] = Field(
        ..., min_length=1, max_length=MAX_LOOKUP_IDS)


class ImageLookupResult(BaseModel):
    """The records found, in the order asked (each id once), and the ids that do not exist
    (never uploaded, or deleted)."""

    images: list[ImagePublic]
    missing: list[int]


class ImagePage(BaseModel):
    """One page of `GET /v1/images`, newest upload first (or, `sort=taken`, newest capture
    first, undated after); `next_offset` is None on the last page."""

    images: list[ImagePublic]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


class SimilarResults(BaseModel):
    """Images like `image_id`, most similar first; the image itself leads (score ~1). For an
    uploaded photo the collection does not hold, `image_id` is None and nothing leads."""

    image_id: int | None
    k: int
    results: list[SearchResult]
    index_version: int | None = None
    partial: bool = False


class DuplicateGroupPublic(BaseModel):
    """Photos judged the same (resized, re-encoded, lightly edited copies): ids ascending, and
    the weakest confirmed cosine between them (`score`)."""

    ids: list[int]
    score: float


class DuplicateGroupPage(BaseModel):
    """One page of `GET /v1/duplicates`; pass `next_cursor` as `cursor` for the next (None on
    the last page)."""

    groups: list[DuplicateGroupPublic]
    limit: int
    next_cursor: str | None = None


class SourceCount(BaseModel):
    """A folder/source images came from, and how many."""

    source: str
    images: int


class ImportCreate(BaseModel):
    """Exactly one of `folder` (server-side, under an import root) or `prefix` (S3 mode)."""

    folder: str | None = Field(None, min_length=1, max_length=1024)
    prefix: str | None = Field(None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_place(self) -> ImportCreate:
        if (self.folder is None) == (self.prefix is None):
            raise ValueError("give exactly one of 'folder' and 'prefix'")
        return self


class ImportPublic(BaseModel):
    """A bulk import and how far it got."""

    id: int
    kind: str  # folder | s3
    location: str
    status: str  # queued | running | done | failed
    total: int | None  # None while the files are being listed
    processed: int
    added: int
    duplicates: int
    failed: int
    errors: list[str]  # the first few files that failed, with why
    error: str | None  # why the whole import failed
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    status_url: str
