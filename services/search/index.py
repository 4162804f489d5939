"""The in-memory vector indexes: exact (brute force) and PCA + K-means inverted file (IVF).

Pure numpy / scikit-learn, no database and no web. Vectors are stored L2-normalised, so cosine
similarity is a dot product: one BLAS matmul per scanned posting list, top-k by `argpartition`.
Queries never take a lock (see `postings`); an index can be built off to the side and swapped in
by reference.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from services.search.postings import IdArray, Matrix, PostingLists, as_ids, top_k, unit_rows
from services.search.quantizer import Quantizer, default_n_clusters, fit_quantizer

__all__ = ["DEFAULT_NPROBE", "ExactIndex", "IVFIndex", "IdArray", "Matrix", "Quantizer",
           "VectorIndex", "build_ivf", "default_n_clusters", "fit_quantizer"]

DEFAULT_NPROBE = 8


class VectorIndex(Protocol):
    """What the search service needs from an index, exact or IVF."""

    @property
    def exact(self) -> bool: ...

    @property
    def dim(self) -> int: ...

    @property
    def n_clusters(self) -> int: ...

    def __len__(self) -> int: ...

    def __contains__(self, image_id: object) -> bool: ...

    def assign(self, vectors: ArrayLike) -> IdArray: ...

    def add(self, ids: ArrayLike, vectors: ArrayLike, lists: ArrayLike | None = None
            ) -> IdArray: ...

    def remove(self, ids: ArrayLike) -> int: ...

    def lists_of(self, ids: ArrayLike) -> IdArray: ...

    def search(self, vector: ArrayLike, k: int, nprobe: int | None = None
               ) -> tuple[IdArray, NDArray[np.float32]]: ...


class ExactIndex:
    """Brute-force cosine search over one contiguous matrix: exact, for small collections."""

    exact = True
    n_clusters = 0

    def __init__(self, dim: int) -> None:
        self._lists = PostingLists(dim, 1)

    @property
    def dim(self) -> int:
        return self._lists.dim

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._lists

    def assign(self, vectors: ArrayLike) -> IdArray:
        return np.zeros(unit_rows(vectors, self.dim).shape[0], dtype=np.int64)

    def add(self, ids: ArrayLike, vectors: ArrayLike, lists: ArrayLike | None = None
            ) -> IdArray:
        """Add or replace vectors; `lists` is accepted for symmetry and ignored."""
        id_arr, mat = as_ids(ids), unit_rows(vectors, self.dim)
        if id_arr.shape[0] != mat.shape[0]:
            raise ValueError(f"{id_arr.shape[0]} ids for {mat.shape[0]} vectors")
        zeros = np.zeros(id_arr.shape[0], dtype=np.int64)
        self._lists.upsert(id_arr, mat, zeros)
        return zeros

    def remove(self, ids: ArrayLike) -> int:
        return self._lists.remove(as_ids(ids))

    def lists_of(self, ids: ArrayLike) -> IdArray:
        return self._lists.lists_of(as_ids(ids))

    def search(self, vector: ArrayLike, k: int, nprobe: int | None = None
               ) -> tuple[IdArray, NDArray[np.float32]]:
        """The k nearest by cosine; `nprobe` is ignored (everything is scanned)."""
        q = unit_rows(vector, self.dim)[0]
        ((vectors, ids),) = self._lists.snapshot()
        return top_k(vectors @ q, ids, k)


class IVFIndex:
    """Inverted file over a fitted `Quantizer`: one posting list per K-means centroid."""

    exact = False

    def __init__(self, quantizer: Quantizer) -> None:
        self.quantizer = quantizer
        self._lists = PostingLists(quantizer.dim, quantizer.n_clusters)

    @property
    def dim(self) -> int:
        return self.quantizer.dim

    @property
    def n_clusters(self) -> int:
        return self.quantizer.n_clusters

    def __len__(self) -> int:
        return len(self._lists)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._lists

    def assign(self, vectors: ArrayLike) -> IdArray:
        """The list (cluster) each vector would join."""
        return self.quantizer.assign(unit_rows(vectors, self.dim))

    def add(self, ids: ArrayLike, vectors: ArrayLike, lists: ArrayLike | None = None
            ) -> IdArray:
        """Add or replace vectors in the given lists (default: nearest centroid); the lists."""
        id_arr, mat = as_ids(ids), unit_rows(vectors, self.dim)
        if id_arr.shape[0] != mat.shape[0]:
            raise ValueError(f"{id_arr.shape[0]} ids for {mat.shape[0]} vectors")
        if lists is None:
            where = self.quantizer.assign(mat)
        else:
            where = as_ids(lists)
            if where.shape[0] != id_arr.shape[0]:
                raise ValueError("one list per vector is needed")
            if where.size and (where.min() < 0 or where.max() >= self.n_clusters):
                raise ValueError(f"list ids must be in [0, {self.n_clusters})")
        self._lists.upsert(id_arr, mat, where)
        return where

    def remove(self, ids: ArrayLike) -> int:
        return self._lists.remove(as_ids(ids))

    def lists_of(self, ids: ArrayLike) -> IdArray:
        """The list each id is in, -1 where it is absent."""
        return self._lists.lists_of(as_ids(ids))

    def list_sizes(self) -> NDArray[np.int64]:
        return np.array([ids.shape[0] for _, ids in self._lists.snapshot()], dtype=np.int64)

    def search(self, vector: ArrayLike, k: int, nprobe: int | None = None
               ) -> tuple[IdArray, NDArray[np.float32]]:
        """The k best by cosine among the members of the `nprobe` nearest clusters."""
        q = unit_rows(vector, self.dim)[0]
        snapshot = self._lists.snapshot()
        scores, ids = [], []
        for c in self.quantizer.probe(q, max(1, nprobe or DEFAULT_NPROBE)).tolist():
            vectors, members = snapshot[c]
            if members.shape[0]:
                scores.append(vectors @ q)
                ids.append(members)
        if not ids:
            return top_k(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64), k)
        return top_k(np.concatenate(scores), np.concatenate(ids), k)


def build_ivf(ids: ArrayLike, vectors: ArrayLike, *, n_clusters: int | None = None,
              pca_components: int = 64, seed: int = 0) -> IVFIndex:
    """Fit a quantizer on the vectors and file every vector under its nearest centroid."""
    mat = np.asarray(vectors, dtype=np.float32)
    mat = unit_rows(mat, mat.shape[-1])
    index = IVFIndex(fit_quantizer(mat, n_clusters=n_clusters, pca_components=pca_components,
                                   seed=seed))
    index.add(ids, mat)
    return index
