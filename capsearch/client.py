"""A small typed client of the gateway's public REST API (what the CLI itself uses).

    from capsearch.client import CapsearchClient
    with CapsearchClient("http://127.0.0.1:8000") as cs:
        ids = cs.upload(["photos/horse.jpg"])
        cs.wait_indexed([i.id for i in ids])
        for hit in cs.search("a horse carrying hay", k=5).results:
            print(hit.score, hit.caption)
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from shared.schemas import (
    MAX_LOOKUP_IDS,
    DuplicateGroupPage,
    DuplicateGroupPublic,
    ImageLookupResult,
    ImagePage,
    ImagePublic,
    ImportCreate,
    ImportPublic,
    SearchResults,
    SimilarResults,
    SourceCount,
    UploadItem,
    UploadResponse,
)

TERMINAL_STATUSES = frozenset({"indexed", "failed"})


def _present(params: dict[str, Any]) -> dict[str, Any]:
    """Without the parameters left unset; dates and date-times as ISO 8601."""
    return {k: v.isoformat() if isinstance(v, date) else v
            for k, v in params.items() if v is not None}


class ApiError(Exception):
    """The gateway answered with an error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        raise ApiError(resp.status_code, err["code"], err["message"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(resp.status_code, "http_error", resp.text[:300]) from None


API_KEY_ENV = "CAPSEARCH_API_KEY"


class RetryAfterTransport(httpx.BaseTransport):
    """Waits out a 429 as its Retry-After says (bounded), so rate limits slow a client down
    instead of failing it."""

    def __init__(self, inner: httpx.BaseTransport | None = None, *, max_retries: int = 8,
                 max_wait_s: float = 10.0) -> None:
        self._inner = inner or httpx.HTTPTransport()
        self._max_retries = max_retries
        self._max_wait_s = max_wait_s

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self._max_retries + 1):
            response = self._inner.handle_request(request)
            if response.status_code != 429 or attempt == self._max_retries:
                return response
            try:
                wait = float(response.headers.get("Retry-After", "0.5"))
            except ValueError:
                wait = 0.5
            response.close()
            time.sleep(min(self._max_wait_s, max(0.05, wait)))
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._inner.close()


class CapsearchClient:
    """Upload, poll, search and delete through the gateway.

    The API key is `api_key`, else the CAPSEARCH_API_KEY environment variable (as the CLI's
    client commands read it); without either, requests go without a key (embedded mode).
    """

    def __init__(self, base_url: str, *, timeout: float = 120.0, api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        api_key = api_key or os.environ.get(API_KEY_ENV) or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers,
                                  transport=RetryAfterTransport(transport))

    def __enter__(self) -> CapsearchClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def upload(self, paths: Sequence[Path | str], *, source: str | None = None
               ) -> list[UploadItem]:
        """Upload files in one request; returns one item per file, in order."""
        files: list[tuple[str, tuple[str, bytes, str]]] = []
        for p in map(Path, paths):
            ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
            files.append(("files", (p.name, p.read_bytes(), ctype)))
        data = {"source": source} if source else None
        resp = self._http.post("/v1/images", files=files, data=data)
        _raise_for(resp)
        return UploadResponse.model_validate(resp.json()).images

    def image(self, image_id: int) -> ImagePublic:
        resp = self._http.get(f"/v1/images/{image_id}")
        _raise_for(resp)
        return ImagePublic.model_validate(resp.json())

    def lookup(self, image_ids: Sequence[int]) -> ImageLookupResult:
        """Many images' records, `MAX_LOOKUP_IDS` per request; unknown ids under `missing`."""
        ids = list(dict.fromkeys(int(i) for i in image_ids))
        found: list[ImagePublic] = []
        missing: list[int] = []
        for start in range(0, len(ids), MAX_LOOKUP_IDS):
            resp = self._http.post("/v1/images/lookup",
                                   json={"ids": ids[start:start + MAX_LOOKUP_IDS]})
            _raise_for(resp)
            part = ImageLookupResult.model_validate(resp.json())
            found += part.images
            missing += part.missing
        return ImageLookupResult(images=found, missing=missing)

    def delete(self, image_id: int) -> None:
        _raise_for(self._http.delete(f"/v1/images/{image_id}"))

    def search(self, query: str, *, k: int = 10, min_score: float | None = None,
               nprobe: int | None = None, sort: str | None = None, hybrid: bool | None = None,
               cursor: str | None = None, **filters: Any) -> SearchResults:
        """One page of results. `sort` is relevance|date|taken (date: newest upload first;
        taken: newest capture first, photos without a capture date after); `filters` are
        date_from, date_to (upload), taken_from, taken_to (capture; ISO strings, `date` or
        `datetime`), source, min_bytes, max_bytes, min_megapixels, max_megapixels; pass a
        page's `next_cursor` as `cursor` for the next one. Each result carries `taken_at`."""
        params: dict[str, Any] = {"q": query, "k": k, "min_score": min_score,
                                  "nprobe": nprobe, "sort": sort, "cursor": cursor,
                                  "hybrid": None if hybrid is None else str(hybrid).lower(),
                                  **filters}
        resp = self._http.get("/v1/search", params=_present(params))
        _raise_for(resp)
        return SearchResults.model_validate(resp.json())

    def similar(self, image_id: int | None = None, *, path: Path | str | None = None,
                k: int = 10, min_score: float | None = None) -> SimilarResults:
        """Images like one of the collection (by id, or a local copy of its file), it first;
        or like any other local photo (`path`), which the server embeds and does not keep."""
        if (image_id is None) == (path is None):
            raise ValueError("give exactly one of image_id and path")
        if path is not None:
            p = Path(path)
            form = _present({"k": k, "min_score": min_score})
            resp = self._http.post("/v1/search/similar", data=form,
                                   files={"file": (p.name, p.read_bytes())})
        else:
            resp = self._http.post("/v1/search/similar", json=_present(
                {"image_id": image_id, "k": k, "min_score": min_score}))
        _raise_for(resp)
        return SimilarResults.model_validate(resp.json())

    def duplicates(self, *, limit: int = 50, cursor: str | None = None) -> DuplicateGroupPage:
        """One page of near-duplicate groups; pass its `next_cursor` as `cursor` for the next."""
        resp = self._http.get("/v1/duplicates", params=_present({"limit": limit,
                                                                 "cursor": cursor}))
        _raise_for(resp)
        return DuplicateGroupPage.model_validate(resp.json())

    def all_duplicates(self, *, limit: int = 200) -> Iterator[DuplicateGroupPublic]:
        """Every near-duplicate group, page after page."""
        cursor: str | None = None
        while True:
            page = self.duplicates(limit=limit, cursor=cursor)
            yield from page.groups
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def images(self, *, status: str | None = None, limit: int = 50, offset: int = 0,
               sort: str | None = None, **filters: Any) -> ImagePage:
        """A page of images, newest upload first (`sort="taken"`: newest capture first),
        with the same filters as `search`."""
        resp = self._http.get("/v1/images", params=_present(
            {"status": status, "limit": limit, "offset": offset, "sort": sort, **filters}))
        _raise_for(resp)
        return ImagePage.model_validate(resp.json())

    def sources(self) -> list[SourceCount]:
        resp = self._http.get("/v1/sources")
        _raise_for(resp)
        return [SourceCount.model_validate(s) for s in resp.json()]

    def start_import(self, *, folder: str | None = None, prefix: str | None = None
                     ) -> ImportPublic:
        """Import a server-side folder or bucket prefix (one the server allows)."""
        body = ImportCreate(folder=folder, prefix=prefix).model_dump(exclude_none=True)
        resp = self._http.post("/v1/imports", json=body)
        _raise_for(resp)
        return ImportPublic.model_validate(resp.json())

    def import_status(self, import_id: int) -> ImportPublic:
        resp = self._http.get(f"/v1/imports/{import_id}")
        _raise_for(resp)
        return ImportPublic.model_validate(resp.json())

    def wait_import(self, import_id: int, *, timeout: float = 3600.0, poll_s: float = 0.5
                    ) -> ImportPublic:
        """Poll an import until it is done or failed."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.import_status(import_id)
            if job.status in ("done", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"import {import_id} not finished in {timeout}s")
            time.sleep(poll_s)

    def rebuild(self) -> dict[str, Any]:
        resp = self._http.post("/v1/index/rebuild")
        _raise_for(resp)
        return dict(resp.json())

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def wait_indexed(
        self,
        image_ids: Iterable[int],
        *,
        timeout: float = 3600.0,
        poll_s: float = 0.5,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> dict[int, ImagePublic]:
        """Poll until every image is `indexed` or `failed`; returns the final records. One
        lookup request per 1,000 outstanding images per poll; an image deleted meanwhile
        raises `ApiError` 404."""
        outstanding = list(dict.fromkeys(int(i) for i in image_ids))
        total = len(outstanding)
        done: dict[int, ImagePublic] = {}
        deadline = time.monotonic() + timeout
        while outstanding:
            found = self.lookup(outstanding)
            if found.missing:
                raise ApiError(404, "not_found",
                               f"image {found.missing[0]} does not exist (deleted?)")
            for rec in found.images:
                if rec.status in TERMINAL_STATUSES:
                    done[rec.id] = rec
            outstanding = [i for i in outstanding if i not in done]
            if on_progress:
                on_progress(len(done), total)
            if not outstanding:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(outstanding)} of {total} images not done in {timeout}s")
            time.sleep(poll_s)
        return done
