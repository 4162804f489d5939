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
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from shared.schemas import ImagePublic, SearchResults, UploadItem, UploadResponse

TERMINAL_STATUSES = frozenset({"indexed", "failed"})


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


class CapsearchClient:
    """Upload, poll, search and delete through the gateway."""

    def __init__(self, base_url: str, *, timeout: float = 120.0, api_key: str | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=headers,
                                  transport=transport)

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

    def delete(self, image_id: int) -> None:
        _raise_for(self._http.delete(f"/v1/images/{image_id}"))

    def search(self, query: str, *, k: int = 10, min_score: float | None = None,
               nprobe: int | None = None) -> SearchResults:
        params: dict[str, Any] = {"q": query, "k": k}
        if min_score is not None:
            params["min_score"] = min_score
        if nprobe is not None:
            params["nprobe"] = nprobe
        resp = self._http.get("/v1/search", params=params)
        _raise_for(resp)
        return SearchResults.model_validate(resp.json())

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
        """Poll until every image is `indexed` or `failed`; returns the final records."""
        outstanding = list(dict.fromkeys(int(i) for i in image_ids))
        total = len(outstanding)
        done: dict[int, ImagePublic] = {}
        deadline = time.monotonic() + timeout
        while outstanding:
            still = []
            for image_id in outstanding:
                rec = self.image(image_id)
                if rec.status in TERMINAL_STATUSES:
                    done[image_id] = rec
                else:
                    still.append(image_id)
            outstanding = still
            if on_progress:
                on_progress(len(done), total)
            if not outstanding:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(outstanding)} of {total} images not done in {timeout}s")
            time.sleep(poll_s)
        return done
