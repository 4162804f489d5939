"""Near-duplicate photos: one vector per photo, nearest-neighbour candidates, cosine, groups.

The same photo resized, re-encoded, lightly cropped or colour-edited keeps nearly the same
pooled CNN features; a different photo of the same kind of scene does not (its caption or
text-space vector may: those separate edits from other photos far worse,
bench/duplicates_eval.py). The pieces, all numpy, no database, web or service imports (the
integration stores vectors, pairs and groups, and asks the search service for neighbours):

- `DuplicateSpace`: GeM-pooled CNN features → unit vectors in which a cosine of at least
  `DEFAULT_THRESHOLD` means "the same photo" (optionally reduced, keeping the mean
  direction, for a smaller index);
- candidates are a photo's k nearest neighbours from an IVF index over those vectors (the
  search service's machinery: an upload's copy is among its original's 8 nearest at nprobe
  2 in every measured case), never all pairs; random-hyperplane band keys were measured and
  need thousands of candidates per photo at 1M photos for the same recall;
- `pairs_from_neighbours` / `confirm` / `matches`: the candidates at cosine >= threshold;
- `DuplicateGroups`: single-link groups of confirmed pairs (union-find), added to one pair at
  a time, so a new upload joins or merges groups without a recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from shared.config import Settings

Matrix = NDArray[np.float32]

# cosine of GeM features at or above which two photos are "the same": the lowest at which at
# most 1 of the 216,811 distinct-photo pairs of flickr8k-dev + coco-mini-val passes, while
# 99.6 % of lightly edited copies do (bench/duplicates_eval.py; docs/quality.md)
DEFAULT_THRESHOLD = 0.775
# neighbours asked per photo: an edited copy was always among its original's 8 nearest
DEFAULT_NEIGHBOURS = 8


def duplicate_vector_model(settings: Settings) -> str:
    """What duplicate vectors are stored under (`embeddings.model`, kind `dup`): the CNN and
    input size that made them, so vectors of another CNN are never compared with them."""
    return f"efficientnet-{settings.backbone_model}@{settings.backbone_image_size}px-gem3"


def unit_rows(x: NDArray[np.floating]) -> Matrix:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class DuplicateSpace:
    """Where duplicates are compared: x ↦ unit((unit(x) − mean) · components^T).

    `fit(..., centre=False)` keeps the mean direction as the first axis and does not subtract
    it: pooled ReLU features of all photos share a large common part, and dropping it (the
    usual PCA) measured worse at telling edited copies from other photos
    (bench/duplicates_eval.py), so the reduction only drops the weakest directions."""

    mean: Matrix  # (F,), zeros when the space is not centred
    components: Matrix  # (D, F), orthonormal rows

    @classmethod
    def fit(cls, features: NDArray[np.floating], dim: int = 256, *, centre: bool = False
            ) -> DuplicateSpace:
        """Axes from unit-length features of photos unrelated to the ones later compared."""
        x = unit_rows(features)
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        if centre:
            return cls(mean.astype(np.float32), vt[:dim].astype(np.float32))
        basis, _ = np.linalg.qr(np.vstack([mean, vt[:dim - 1]]).T)  # mean direction first
        basis = basis.T * np.where(basis.T @ mean < 0, -1.0, 1.0)[:, None]  # QR's signs
        return cls(np.zeros_like(mean, dtype=np.float32), basis.astype(np.float32))

    @classmethod
    def identity(cls, dim: int) -> DuplicateSpace:
        """The features as they are (unit length), no reduction."""
        return cls(np.zeros(dim, dtype=np.float32), np.eye(dim, dtype=np.float32))

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def project(self, features: NDArray[np.floating]) -> Matrix:
        """(N, F) pooled features → (N, D) unit vectors of the duplicate space."""
        return unit_rows((unit_rows(features) - self.mean) @ self.components.T)


def pairs_from_neighbours(ids: Sequence[int], neighbour_ids: NDArray[np.int64],
                          scores: NDArray[np.floating], threshold: float
                          ) -> list[tuple[int, int, float]]:
    """Confirmed pairs (a < b) from k-nearest-neighbour results: row i of `neighbour_ids` /
    `scores` (−1 / −inf pad) are the neighbours of `ids[i]` (itself included or not)."""
    found: dict[tuple[int, int], float] = {}
    for image_id, row_ids, row_scores in zip(ids, neighbour_ids, scores, strict=True):
        for other, score in zip(row_ids.tolist(), row_scores.tolist(), strict=True):
            if other < 0 or other == image_id or score < threshold:
                continue
            key = (min(image_id, other), max(image_id, other))
            found[key] = max(score, found.get(key, -1.0))
    return [(a, b, s) for (a, b), s in sorted(found.items())]


def confirm(pairs: NDArray[np.int64], vectors: NDArray[np.floating], threshold: float
            ) -> tuple[NDArray[np.int64], Matrix]:
    """The pairs whose rows are at cosine >= threshold, and those cosines."""
    if not len(pairs):
        return pairs, np.zeros(0, dtype=np.float32)
    v = np.asarray(vectors, dtype=np.float32)
    scores = np.einsum("ij,ij->i", v[pairs[:, 0]], v[pairs[:, 1]])
    keep = scores >= threshold
    return pairs[keep], scores[keep].astype(np.float32)


def matches(vector: NDArray[np.floating], candidates: NDArray[np.floating],
            threshold: float) -> tuple[NDArray[np.int64], Matrix]:
    """Positions of the candidate rows at cosine >= threshold to one vector, and cosines."""
    if not len(candidates):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    scores = np.asarray(candidates, dtype=np.float32) @ np.asarray(vector, dtype=np.float32)
    keep = np.flatnonzero(scores >= threshold)
    return keep.astype(np.int64), scores[keep].astype(np.float32)


@dataclass(frozen=True)
class DuplicateGroup:
    """Photos judged the same: ids ascending, and the weakest confirmed link between them."""

    ids: tuple[int, ...]
    score: float


@dataclass
class DuplicateGroups:
    """Single-link groups over confirmed pairs of image ids (union-find, path halving).

    Pairs come one at a time (an upload's confirmed matches) or in bulk; `remove` drops an
    image and splits its group again from the pairs that are left."""

    _parent: dict[int, int] = field(default_factory=dict)
    _pairs: dict[tuple[int, int], float] = field(default_factory=dict)

    def add(self, a: int, b: int, score: float) -> None:
        if a == b:
            return
        key = (min(a, b), max(a, b))
        self._pairs[key] = max(score, self._pairs.get(key, -1.0))
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)  # the oldest id is the root

    def add_all(self, pairs: Iterable[tuple[int, int, float]]) -> None:
        for a, b, score in pairs:
            self.add(a, b, score)

    def remove(self, image_id: int) -> None:
        """Forget an image (deleted) and rebuild the groups from the remaining pairs."""
        pairs = [(a, b, s) for (a, b), s in self._pairs.items() if image_id not in (a, b)]
        self._parent.clear()
        self._pairs.clear()
        self.add_all(pairs)

    def group_of(self, image_id: int) -> int:
        """The group's id: its smallest image id (the image itself when it has no group)."""
        return self._root(image_id) if image_id in self._parent else image_id

    def groups(self, *, min_size: int = 2) -> list[DuplicateGroup]:
        """Every group of at least `min_size` photos, largest first, then by first id."""
        members: dict[int, list[int]] = {}
        for node in list(self._parent):
            members.setdefault(self._root(node), []).append(node)
        weakest: dict[int, float] = {}
        for (a, _), score in self._pairs.items():
            root = self._root(a)
            weakest[root] = min(score, weakest.get(root, 1.0))
        out = [DuplicateGroup(tuple(sorted(ids)), round(float(weakest[root]), 4))
               for root, ids in members.items() if len(ids) >= min_size]
        return sorted(out, key=lambda g: (-len(g.ids), g.ids[0]))

    def _root(self, node: int) -> int:
        parent = self._parent
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]  # path halving
            node = parent[node]
        return node


Neighbours = Callable[[Matrix, int], tuple[NDArray[np.int64], NDArray[np.floating]]]


def group_collection(ids: Sequence[int], vectors: NDArray[np.floating], neighbours: Neighbours,
                     *, threshold: float = DEFAULT_THRESHOLD, k: int = DEFAULT_NEIGHBOURS
                     ) -> list[DuplicateGroup]:
    """Every duplicate group of a whole collection from scratch (the batch path):
    `neighbours(vectors, k)` gives each row's k nearest as (ids, scores), e.g. an IVF
    index's `search_batch` over the same ids."""
    found_ids, found_scores = neighbours(np.asarray(vectors, dtype=np.float32), k + 1)
    groups = DuplicateGroups()
    groups.add_all(pairs_from_neighbours(ids, found_ids, found_scores, threshold))
    return groups.groups()
