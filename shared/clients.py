"""The internal services' client contracts, async first, and their HTTP implementations.

One contract per service: `EncoderClient` (texts in, unit vectors out) and `IndexClient` (the
search service's index: add, remove, search, rebuild, report). The gateway holds one of each:
`HttpEncoderClient` and `HttpIndexClient` speak them over one pooled `httpx.AsyncClient` each,
several search shards sit behind `shared.shards.ShardedIndexClient`, and the embedded mode puts
the in-process services behind them (`services/encoder/inprocess.py`,
`services/search/inprocess.py`).

The caption worker is synchronous. Its pipeline asks only for `SyncEncoder` and `IndexWriter`,
which the in-process models satisfy directly and the HTTP clients satisfy through the thin
shells of `shared.blocking`.

Transport failures surface as `shared.errors.Dependency*` errors, so every caller maps them to
502/503/504 the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import httpx
import numpy as np
from numpy.typing import NDArray

from shared.config import Settings
from shared.errors import (
    CapsearchError,
    DependencyError,
    DependencyTimeout,
    DependencyUnavailable,
)
from shared.logging import request_id_var
from shared.schemas import (
    EncodeRequest,
    EncodeResponse,
    IndexAddRequest,
    IndexChangeResponse,
    IndexItem,
    IndexRemoveRequest,
    IndexStats,
    RebuildStatus,
    SearchRequest,
    SearchResponse,
)

# ---- the contracts ---------------------------------------------------------------------------


class EncoderClient(Protocol):
    """The encoder service: texts into L2-normalised vectors, one row per text."""

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    async def aclose(self) -> None: ...


class IndexClient(Protocol):
    """The search service's index: add, remove and search vectors; rebuild it; report on it."""

    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse: ...

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse: ...

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse: ...

    async def start_rebuild(self) -> RebuildStatus: ...

    async def rebuild_status(self) -> RebuildStatus: ...

    async def stats(self) -> IndexStats: ...

    async def aclose(self) -> None: ...


class SyncEncoder(Protocol):
    """What the synchronous caption worker encodes with: an in-process text encoder, or the
    encoder service through `shared.blocking.BlockingEncoder`."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class IndexWriter(Protocol):
    """What the synchronous caption worker (and `capsearch doctor`) change the index with: the
    in-process `IndexService`, or the search service through `shared.blocking.BlockingIndex`."""

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
            ) -> IndexChangeResponse: ...

    def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse: ...


class NeighbourIndex(IndexWriter, Protocol):
    """An index the worker also asks for neighbours (the near-duplicate index)."""

    def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
               ) -> SearchResponse: ...


# ---- HTTP ------------------------------------------------------------------------------------

# internal services accept calls only with the shared token (settings.service_token)
SERVICE_TOKEN_HEADER = "X-Service-Token"
# every internal client's pool: an idle connection is dropped here (2 s) before uvicorn drops
# it (5 s): otherwise a request sent on a connection the server is closing at that instant
# fails ("search unreachable")
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                           keepalive_expiry=2.0)
# request and response bodies on the query path are (de)serialised by pydantic's JSON core,
# not the stdlib: for 384 floats, dumping took 505 us with `json` and 47 us with pydantic,
# parsing 368 us and 33 us (on the 2 shared cores of the benchmarks)
JSON_HEADERS = {"Content-Type": "application/json"}


def _raise_for(resp: httpx.Response, service: str) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        message, code = err["message"], err["code"]
    except Exception:
        message, code = resp.text[:200], "dependency_error"
    if resp.status_code == 503:
        raise DependencyUnavailable(f"{service}: {message}")
    if resp.status_code == 504:
        raise DependencyTimeout(f"{service}: {message}")
    if 400 <= resp.status_code < 500:
        # the caller sent something the service refused: keep the service's status and code
        exc = CapsearchError(f"{service}: {message}", code=code)
        exc.status_code = resp.status_code
        raise exc
    raise DependencyError(f"{service} answered {resp.status_code}: {message}")


@contextmanager
def _transport_errors(service: str) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DependencyTimeout(f"{service} timed out: {exc}") from exc
    except httpx.TransportError as exc:
        raise DependencyUnavailable(f"{service} unreachable: {exc}") from exc


class ServiceClient:
    """Base of the HTTP clients: one pooled `httpx.AsyncClient` to one internal service, the
    service token and the request id on every call, failures as `shared.errors`.

    No proxies from the environment (`trust_env=False`): these calls stay inside the deployment.
    """

    service = "service"  # what errors call it

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 service_token: str | None = None) -> None:
        auth = {SERVICE_TOKEN_HEADER: service_token} if service_token else {}
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers=auth, limits=POOL_LIMITS, trust_env=False)

    async def _call(self, method: str, path: str, *, json: Any = None,
                    content: bytes | None = None) -> httpx.Response:
        """The service's answer, read whole (`content` is a JSON body already serialised)."""
        headers = {"X-Request-ID": request_id_var.get()}
        if content is not None:
            headers |= JSON_HEADERS
        with _transport_errors(self.service):
            resp = await self._http.request(method, path, json=json, content=content,
                                            headers=headers)
        _raise_for(resp, self.service)
        return resp

    async def aclose(self) -> None:
        await self._http.aclose()


class HttpEncoderClient(ServiceClient):
    """`EncoderClient` of the encoder service over HTTP."""

    service = "encoder"

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        body = EncodeRequest(texts=list(texts)).model_dump_json().encode()
        resp = await self._call("POST", "/v1/encode", content=body)
        answer = EncodeResponse.model_validate_json(resp.content)
        return np.asarray(answer.vectors, dtype=np.float32).reshape(len(answer.vectors),
                                                                   answer.dim)


class HttpIndexClient(ServiceClient):
    """`IndexClient` of one search service replica or shard over HTTP; `space="duplicates"`
    speaks to the same service's near-duplicate index (`/v1/duplicates/...`)."""

    service = "search"

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 service_token: str | None = None, space: str = "") -> None:
        super().__init__(base_url, timeout, transport, service_token)
        self._root = f"/v1/{space}" if space else "/v1"

    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse:
        items = [IndexItem(image_id=int(i), vector=v.tolist())
                 for i, v in zip(image_ids, vectors, strict=True)]
        resp = await self._call("POST", f"{self._root}/index/add",
                                json=IndexAddRequest(items=items).model_dump())
        return IndexChangeResponse.model_validate(resp.json())

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        body = IndexRemoveRequest(image_ids=[int(i) for i in image_ids]).model_dump()
        resp = await self._call("POST", f"{self._root}/index/remove", json=body)
        return IndexChangeResponse.model_validate(resp.json())

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse:
        body = SearchRequest(vector=np.asarray(vector).ravel().tolist(), k=k, nprobe=nprobe)
        resp = await self._call("POST", f"{self._root}/search",
                                content=body.model_dump_json().encode())
        return SearchResponse.model_validate_json(resp.content)

    async def start_rebuild(self) -> RebuildStatus:
        resp = await self._call("POST", f"{self._root}/index/rebuild")
        return RebuildStatus.model_validate(resp.json())

    async def rebuild_status(self) -> RebuildStatus:
        resp = await self._call("GET", f"{self._root}/index/rebuild")
        return RebuildStatus.model_validate(resp.json())

    async def stats(self) -> IndexStats:
        resp = await self._call("GET", f"{self._root}/index/stats")
        return IndexStats.model_validate(resp.json())


def service_token(settings: Settings) -> str | None:
    """The token the internal services want (None: they run without one, development only)."""
    return settings.service_token.get_secret_value() or None


def make_encoder_client(settings: Settings) -> HttpEncoderClient:
    """The encoder service's client, as the settings place and guard it."""
    return HttpEncoderClient(settings.encoder_url, timeout=settings.http_timeout_s,
                             service_token=service_token(settings))
