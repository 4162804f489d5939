"""The gateway's async clients (httpx.AsyncClient, its default transport) against real
servers: schemas in and out, headers, and failures mapped to the Dependency* errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.clients import SERVICE_TOKEN_HEADER, HttpEncoderClient, HttpIndexClient
from shared.errors import DependencyTimeout, DependencyUnavailable
from shared.logging import request_id_var
from tests.support.asgiserver import serve_asgi
from tests.support.faults import free_port


def services_app(seen: list[dict[str, str]], status: int = 200) -> FastAPI:
    """Encoder and search in one app: fixed answers, every request's headers kept."""
    app = FastAPI()

    @app.post("/v1/encode")
    async def encode(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        texts = (await request.json())["texts"]
        return JSONResponse({"model": "fake", "dim": 2, "vectors": [[0.6, 0.8]] * len(texts)})

    @app.post("/v1/search")
    async def search(request: Request) -> JSONResponse:
        seen.append(dict(request.headers))
        if status != 200:
            return JSONResponse({"error": {"code": "x", "message": "index loading"}},
                                status_code=status)
        k = (await request.json())["k"]
        return JSONResponse({"hits": [{"image_id": i, "score": 1 - i / 10} for i in range(k)],
                             "index_version": 3, "exact": True})

    return app


def test_encode_and_search_round_trip_with_token_and_request_id() -> None:
    seen: list[dict[str, str]] = []

    async def main() -> None:
        request_id_var.set("rid-42")
        async with serve_asgi(services_app(seen)) as url:
            encoder = HttpEncoderClient(url, service_token="s3cret")
            index = HttpIndexClient(url, service_token="s3cret")
            vectors = await encoder.encode(["a dog", "a cat"])
            found = await index.search(vectors[0], k=3)
            await encoder.aclose()
            await index.aclose()
        np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.6, 0.8]])
        assert [h.image_id for h in found.hits] == [0, 1, 2] and found.index_version == 3

    asyncio.run(main())
    assert [h[SERVICE_TOKEN_HEADER.lower()] for h in seen] == ["s3cret", "s3cret"]
    assert [h["x-request-id"] for h in seen] == ["rid-42", "rid-42"]


def test_a_503_from_search_is_dependency_unavailable() -> None:
    async def main() -> None:
        async with serve_asgi(services_app([], status=503)) as url:
            index = HttpIndexClient(url)
            try:
                with pytest.raises(DependencyUnavailable, match="index loading"):
                    await index.search(np.ones(2, dtype=np.float32), k=3)
            finally:
                await index.aclose()

    asyncio.run(main())


def test_an_encoder_not_listening_is_dependency_unavailable() -> None:
    async def main() -> None:
        encoder = HttpEncoderClient(f"http://127.0.0.1:{free_port()}", timeout=2.0)
        with pytest.raises(DependencyUnavailable, match="encoder unreachable"):
            await encoder.encode(["a dog"])
        await encoder.aclose()

    asyncio.run(main())


def test_a_search_that_never_answers_is_dependency_timeout() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            writer.close()  # at the end of asyncio.run

    async def main() -> None:
        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        index = HttpIndexClient(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}",
                                     timeout=0.2)
        try:
            with pytest.raises(DependencyTimeout, match="search timed out"):
                await index.search(np.ones(2, dtype=np.float32), k=3)
        finally:
            await index.aclose()
            server.close()

    asyncio.run(main())

