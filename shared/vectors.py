"""Vectors as compact float32 bytes (never JSON) in the database."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def to_bytes(vector: NDArray[np.floating]) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_bytes(blob: bytes, dim: int | None = None) -> NDArray[np.float32]:
    vec = np.frombuffer(blob, dtype="<f4")
    if dim is not None and vec.shape[0] != dim:
        raise ValueError(f"vector has {vec.shape[0]} dims, expected {dim}")
    return vec.astype(np.float32, copy=False)


def stack_bytes(blobs: list[bytes], dim: int) -> NDArray[np.float32]:
    """Many float32 blobs into one (n, dim) matrix with a single copy."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(
        np.float32, copy=False
    )


def l2_normalize(matrix: NDArray[np.floating]) -> NDArray[np.float32]:
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.maximum(norms, 1e-12)
