"""Text-encoder vectors of training captions, computed once and cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from shared.clients import SyncEncoder

CHUNK = 2048  # texts per encoder call, so a progress bar can move


def cached_text_vectors(texts: Sequence[str], encoder: SyncEncoder, cache_dir: Path,
                        *, model: str, desc: str = "text vectors") -> NDArray[np.float32]:
    """(len(texts), dim) unit vectors from `encoder`, cached by the texts and the model name."""
    from services.caption.training.progress import progress_bar

    key = hashlib.sha256(json.dumps([model, list(texts)]).encode()).hexdigest()[:20]
    file = Path(cache_dir) / f"text-{key}.npy"
    if file.is_file():
        return np.load(file)
    parts = []
    for start in progress_bar(range(0, len(texts), CHUNK), desc=desc, unit="chunk"):
        parts.append(np.asarray(encoder.encode(list(texts[start:start + CHUNK])), np.float32))
    vectors = np.vstack(parts) if parts else np.zeros((0, 0), np.float32)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(file)
    return vectors
