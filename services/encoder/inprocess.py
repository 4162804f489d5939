"""The encoder inside the caller's process (embedded mode): the `EncoderClient` contract over
a loaded text encoder, each call in a worker thread so the event loop never blocks."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import numpy as np
from numpy.typing import NDArray

from shared.clients import SyncEncoder


class InProcessEncoderClient:
    """`EncoderClient` over an in-process `SyncEncoder` (e.g. `BertTextEncoder`)."""

    def __init__(self, encoder: SyncEncoder) -> None:
        self.encoder = encoder

    async def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return await anyio.to_thread.run_sync(self.encoder.encode, list(texts))

    async def aclose(self) -> None:
        return None  # the embedded stack owns the encoder
