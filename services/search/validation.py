"""Input checks of the search service: ids and vectors it can index or query, else a 422."""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from services.search.postings import IdArray, Matrix
from shared.errors import ValidationFailed

_MAX_ID = 2**63 - 1


def as_image_ids(image_ids: Sequence[int] | ArrayLike) -> IdArray:
    """Image ids as int64, refusing anything that is not a positive 64-bit integer."""
    try:
        values = [operator.index(i) for i in np.asarray(image_ids, dtype=object).ravel()]
    except TypeError as exc:
        raise ValidationFailed("image ids must be integers") from exc
    bad = [i for i in values if not 0 < i <= _MAX_ID]
    if bad:
        raise ValidationFailed(f"image ids must be positive 64-bit integers, got {bad[:5]}")
    return np.asarray(values, dtype=np.int64)


def as_matrix(vectors: ArrayLike, *, rows: int | None = None) -> Matrix:
    """A float32 (n, dim) matrix of finite, non-zero rows; anything else is a 422."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow shows up as inf below
            mat = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"vectors must be equal-length lists of numbers: {exc}") from exc
    if mat.ndim == 1:
        mat = mat.reshape(1, -1)
    if mat.ndim != 2 or mat.shape[1] == 0:
        raise ValidationFailed(f"vectors must form an (n, dim) matrix, got shape {mat.shape}")
    if rows is not None and mat.shape[0] != rows:
        raise ValidationFailed(f"{rows} image ids but {mat.shape[0]} vectors")
    if not np.isfinite(mat).all():
        raise ValidationFailed("vectors must be finite (no NaN or infinity)")
    if not np.any(mat, axis=1).all():
        raise ValidationFailed("vectors must not be all zeros")
    return mat
