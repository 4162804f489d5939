"""Typed HTTP clients for the internal services (sync for the worker, async for the gateway).

Both speak the schemas in `shared.schemas`; transport failures surface as the
`shared.errors.Dependency*` errors so callers map them to 502/503/504 the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import httpx
import numpy as np
from numpy.typing import NDArray

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
    RebuildResponse,
    RebuildStatus,
    SearchRequest,
    SearchResponse,
)


class TextEncoderClient(Protocol):
    """Turns texts into L2-normalised vectors."""

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class IndexClient(Protocol):
    """Adds, removes and searches vectors in the search service's index."""

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
            ) -> IndexChangeResponse: ...

    def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse: ...

    def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
               ) -> SearchResponse: ...

    def rebuild(self) -> RebuildResponse: ...

    def start_rebuild(self) -> RebuildStatus: ...

    def rebuild_status(self) -> RebuildStatus: ...

    def stats(self) -> IndexStats: ...


class AsyncTextEncoderClient(Protocol):
    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class AsyncIndexClient(Protocol):
    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse: ...

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse: ...

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse: ...

    async def rebuild(self) -> RebuildResponse: ...

    async def start_rebuild(self) -> RebuildStatus: ...

    async def rebuild_status(self) -> RebuildStatus: ...

    async def stats(self) -> IndexStats: ...


# internal services accept calls only with the shared token (settings.service_token)
SERVICE_TOKEN_HEADER = "X-Service-Token"
# every internal client's pool: an idle connection is dropped here (2 s) before uvicorn drops
# it (5 s): otherwise a request sent on a connection the server is closing at that instant
# fails ("search unreachable")
POOL_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20,
                           keepalive_expiry=2.0)


def _headers() -> dict[str, str]:
    return {"X-Request-ID": request_id_var.get()}


def _auth_headers(service_token: str | None) -> dict[str, str]:
    return {SERVICE_TOKEN_HEADER: service_token} if service_token else {}


# how often `rebuild()` polls the status of the rebuild it started
REBUILD_POLL_S = 0.2


def _rebuild_result(status: RebuildStatus) -> RebuildResponse:
    if status.state == "done" and status.result is not None:
        return status.result
    raise DependencyError(f"search: the rebuild failed: {status.error}")


def _raise_for(resp: httpx.Response, service: str) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        message, code = err["message"], err["code"]
    except Exception:
        message, code = resp.text[:200], "dependency_error"
    if resp.status_code in (503,):
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


# request and response bodies on the query path are (de)serialised by pydantic's JSON core,
# not the stdlib: for 384 floats, dumping took 505 us with `json` and 47 us with pydantic,
# parsing 368 us and 33 us (on the 2 shared cores of the benchmarks)
JSON_HEADERS = {"Content-Type": "application/json"}


def _vectors_of(resp: httpx.Response) -> NDArray[np.float32]:
    body = EncodeResponse.model_validate_json(resp.content)
    return np.asarray(body.vectors, dtype=np.float32).reshape(len(body.vectors), body.dim)


def _encode_body(texts: Sequence[str]) -> bytes:
    return EncodeRequest(texts=list(texts)).model_dump_json().encode()


def _add_body(image_ids: Sequence[int], vectors: NDArray[np.float32]) -> dict[str, Any]:
    items = [IndexItem(image_id=int(i), vector=v.tolist()) for i, v in zip(image_ids, vectors,
                                                                             strict=True)]
    return IndexAddRequest(items=items).model_dump()


def _search_body(vector: NDArray[np.float32], k: int, nprobe: int | None) -> bytes:
    return SearchRequest(vector=np.asarray(vector).ravel().tolist(), k=k,
                         nprobe=nprobe).model_dump_json().encode()


class HttpEncoderClient:
    """Sync client of the encoder service."""

    service = "encoder"

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 service_token: str | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers=_auth_headers(service_token), limits=POOL_LIMITS)

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        with _transport_errors(self.service):
            resp = self._http.post("/v1/encode", headers=_headers() | JSON_HEADERS,
                                   content=_encode_body(texts))
        _raise_for(resp, self.service)
        return _vectors_of(resp)

    def close(self) -> None:
        self._http.close()


class HttpIndexClient:
    """Sync client of the search service."""

    service = "search"

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 service_token: str | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers=_auth_headers(service_token), limits=POOL_LIMITS)

    def _call(self, method: str, path: str, json: Any = None, content: bytes | None = None
              ) -> httpx.Response:
        headers = _headers() | JSON_HEADERS if content is not None else _headers()
        with _transport_errors(self.service):
            resp = self._http.request(method, path, json=json, content=content,
                                      headers=headers)
        _raise_for(resp, self.service)
        return resp

    def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]) -> IndexChangeResponse:
        resp = self._call("POST", "/v1/index/add", _add_body(image_ids, vectors))
        return IndexChangeResponse.model_validate(resp.json())

    def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        body = IndexRemoveRequest(image_ids=[int(i) for i in image_ids]).model_dump()
        return IndexChangeResponse.model_validate(
            self._call("POST", "/v1/index/remove", body).json())

    def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
               ) -> SearchResponse:
        resp = self._call("POST", "/v1/search", content=_search_body(vector, k, nprobe))
        return SearchResponse.model_validate_json(resp.content)

    def rebuild(self) -> RebuildResponse:
        """Start a rebuild and wait for it (polling its status: no request stays open)."""
        status = self.start_rebuild()
        while status.state == "building":
            time.sleep(REBUILD_POLL_S)
            status = self.rebuild_status()
        return _rebuild_result(status)

    def start_rebuild(self) -> RebuildStatus:
        return RebuildStatus.model_validate(self._call("POST", "/v1/index/rebuild").json())

    def rebuild_status(self) -> RebuildStatus:
        return RebuildStatus.model_validate(self._call("GET", "/v1/index/rebuild").json())

    def stats(self) -> IndexStats:
        return IndexStats.model_validate(self._call("GET", "/v1/index/stats").json())

    def close(self) -> None:
        self._http.close()


class _AsyncService:
    """Requests to one internal service on one pooled `httpx.AsyncClient`: the service token and
    the request id on every call, JSON bodies, failures as `shared.errors` (`_raise_for`).

    No proxies from the environment (`trust_env=False`): these calls stay inside the deployment.
    """

    def __init__(self, service: str, base_url: str, timeout: float,
                 transport: httpx.AsyncBaseTransport | None, service_token: str | None
                 ) -> None:
        self.service = service
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers=_auth_headers(service_token),
                                       limits=POOL_LIMITS, trust_env=False)

    async def call(self, method: str, path: str, *, json: Any = None,
                   content: bytes | None = None) -> httpx.Response:
        """The service's answer, read whole; failures as `shared.errors` (`_raise_for`)."""
        headers = _headers() | JSON_HEADERS if content is not None else _headers()
        with _transport_errors(self.service):
            resp = await self._http.request(method, path, json=json, content=content,
                                            headers=headers)
        _raise_for(resp, self.service)
        return resp

    async def aclose(self) -> None:
        await self._http.aclose()


class AsyncHttpEncoderClient:
    """Async client of the encoder service (used by the gateway)."""

    service = "encoder"

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 service_token: str | None = None) -> None:
        self._http = _AsyncService(self.service, base_url, timeout, transport, service_token)

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return _vectors_of(await self._http.call("POST", "/v1/encode",
                                                 content=_encode_body(texts)))

    async def aclose(self) -> None:
        await self._http.aclose()


class AsyncHttpIndexClient:
    """Async client of one search service replica/shard (used by the gateway)."""

    service = "search"

    def __init__(self, base_url: str, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 service_token: str | None = None) -> None:
        self._http = _AsyncService(self.service, base_url, timeout, transport, service_token)

    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse:
        resp = await self._http.call("POST", "/v1/index/add",
                                     json=_add_body(image_ids, vectors))
        return IndexChangeResponse.model_validate(resp.json())

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        body = IndexRemoveRequest(image_ids=[int(i) for i in image_ids]).model_dump()
        resp = await self._http.call("POST", "/v1/index/remove", json=body)
        return IndexChangeResponse.model_validate(resp.json())

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse:
        resp = await self._http.call("POST", "/v1/search",
                                     content=_search_body(vector, k, nprobe))
        return SearchResponse.model_validate_json(resp.content)

    async def rebuild(self) -> RebuildResponse:
        """Start a rebuild and wait for it (polling its status: no request stays open)."""
        status = await self.start_rebuild()
        while status.state == "building":
            await asyncio.sleep(REBUILD_POLL_S)
            status = await self.rebuild_status()
        return _rebuild_result(status)

    async def start_rebuild(self) -> RebuildStatus:
        resp = await self._http.call("POST", "/v1/index/rebuild")
        return RebuildStatus.model_validate(resp.json())

    async def rebuild_status(self) -> RebuildStatus:
        resp = await self._http.call("GET", "/v1/index/rebuild")
        return RebuildStatus.model_validate(resp.json())

    async def stats(self) -> IndexStats:
        resp = await self._http.call("GET", "/v1/index/stats")
        return IndexStats.model_validate(resp.json())

    async def aclose(self) -> None:
        await self._http.aclose()


class ThreadedAsyncEncoder:
    """Async face of an in-process encoder: blocking work runs in a worker thread."""

    def __init__(self, sync: TextEncoderClient) -> None:
        self._sync = sync

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.encode, list(texts))

    async def aclose(self) -> None:
        return None


class ThreadedAsyncIndex:
    """Async face of an in-process index: blocking work runs in a worker thread."""

    def __init__(self, sync: IndexClient) -> None:
        self._sync = sync

    async def add(self, image_ids: Sequence[int], vectors: NDArray[np.float32]
                  ) -> IndexChangeResponse:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.add, list(image_ids), vectors)

    async def remove(self, image_ids: Sequence[int]) -> IndexChangeResponse:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.remove, list(image_ids))

    async def search(self, vector: NDArray[np.float32], k: int, nprobe: int | None = None
                     ) -> SearchResponse:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.search, vector, k, nprobe)

    async def rebuild(self) -> RebuildResponse:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.rebuild)

    async def start_rebuild(self) -> RebuildStatus:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.start_rebuild)

    async def rebuild_status(self) -> RebuildStatus:
        return self._sync.rebuild_status()

    async def stats(self) -> IndexStats:
        import anyio

        return await anyio.to_thread.run_sync(self._sync.stats)

    async def aclose(self) -> None:
        return None
