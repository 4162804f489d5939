"""Near-duplicate photos: one vector per photo, LSH band keys, cosine confirmation, groups.

The same photo resized, re-encoded, lightly cropped or colour-edited keeps nearly the same CNN
features; a different photo of the same kind of scene does not (its caption vector may: that
is why the text-space vector is not used; bench/duplicates_eval.py measures both). The
pieces, all numpy, no database or web imports (the integration stores keys and groups):

- `DuplicateSpace`: GeM-pooled CNN features → centred, PCA-reduced, unit vectors in which a
  cosine of at least `threshold` means "the same photo";
- `BandHasher`: random-hyperplane (SimHash) bits of such a vector cut into `bands` keys of
  `bits` bits. Two photos at cosine s share a given band with probability
  (1 - arccos(s)/pi)^bits, so duplicates (s >= ~0.9) almost always share one of the bands and
  unrelated photos (s ~ 0) almost never: a photo's candidates are the photos with an equal
  key in any band (an indexed `(band, key)` lookup), never all pairs;
- `candidate_pairs`: the same lookup for a whole collection at once (sort per band);
- `confirm`: the candidates that really are at cosine >= threshold;
- `DuplicateGroups`: single-link groups of confirmed pairs (union-find), added to one pair at
  a time, so a new upload joins or merges groups without a recomputation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]

# cosine in the duplicate space at or above which two photos are "the same" (chosen on
# bench/duplicates_eval.py's generated pairs; docs/quality.md)
DEFAULT_THRESHOLD = 0.85
DEFAULT_BANDS = 16
DEFAULT_BITS = 16


def unit_rows(x: NDArray[np.floating]) -> Matrix:
    """Rows scaled to unit length (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class DuplicateSpace:
    """Where duplicates are compared: x ↦ unit((unit(x) − mean) · components^T).

    Centring matters: pooled ReLU features are all positive, so raw vectors of unrelated
    photos already sit at cosine ~0.6-0.8; centred and reduced they sit near 0, which is what
    makes a threshold and random hyperplanes discriminate."""

    mean: Matrix  # (F,)
    components: Matrix  # (D, F), orthonormal rows

    @classmethod
    def fit(cls, features: NDArray[np.floating], dim: int = 128) -> DuplicateSpace:
        """PCA of unit-length features (photos unrelated to the ones later compared)."""
        x = unit_rows(features)
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return cls(mean.astype(np.float32), vt[:dim].astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def project(self, features: NDArray[np.floating]) -> Matrix:
        """(N, F) pooled features → (N, D) unit vectors of the duplicate space."""
        return unit_rows((unit_rows(features) - self.mean) @ self.components.T)


@dataclass(frozen=True)
class BandHasher:
    """`bands` keys of `bits` random-hyperplane sign bits each, from a fixed seed (keys stay
    valid across processes and releases while dim, bands, bits and seed do)."""

    dim: int
    bands: int = DEFAULT_BANDS
    bits: int = DEFAULT_BITS
    seed: int = 19

    def __post_init__(self) -> None:
        if not (1 <= self.bits <= 62 and self.bands >= 1 and self.dim >= 1):
            raise ValueError("need dim >= 1, bands >= 1 and 1 <= bits <= 62")

    @cached_property
    def planes(self) -> Matrix:
        rng = np.random.default_rng(self.seed)
        return rng.standard_normal((self.dim, self.bands * self.bits)).astype(np.float32)

    def keys(self, vectors: NDArray[np.floating]) -> NDArray[np.int64]:
        """(N, dim) → (N, bands) keys in [0, 2^bits): key b of a row is its bits of band b."""
        signs = (np.asarray(vectors, dtype=np.float32) @ self.planes) > 0
        signs = signs.reshape(len(signs), self.bands, self.bits)
        weights = np.left_shift(np.int64(1), np.arange(self.bits, dtype=np.int64))
        return (signs.astype(np.int64) * weights).sum(axis=2)

    def candidate_probability(self, cosine: float) -> float:
        """Chance that two vectors at `cosine` share at least one band key."""
        p = 1.0 - np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi
        return float(1.0 - (1.0 - p ** self.bits) ** self.bands)


def candidate_pairs(keys: NDArray[np.int64], *, max_bucket: int = 1000
                    ) -> NDArray[np.int64]:
    """Row pairs (i < j), unique, that share a key in at least one band: (P, 2).

    Buckets larger than `max_bucket` (a degenerate key shared by very many photos, e.g.
    blank frames) are skipped rather than expanded into all their pairs; their photos still
    meet through the other bands."""
    found: list[NDArray[np.int64]] = []
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        sorted_keys = band[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        sizes = np.diff(np.r_[starts, len(band)])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            if size > max_bucket:
                continue
            rows = np.sort(order[start:start + size])
            i, j = np.triu_indices(size, k=1)
            found.append(np.stack([rows[i], rows[j]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


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


def group_collection(ids: Sequence[int], vectors: NDArray[np.floating], hasher: BandHasher,
                     threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """Every duplicate group of a whole collection from scratch (the batch path)."""
    pairs, scores = confirm(candidate_pairs(hasher.keys(vectors)), vectors, threshold)
    groups = DuplicateGroups()
    groups.add_all((int(ids[i]), int(ids[j]), float(s))
                   for (i, j), s in zip(pairs, scores, strict=True))
    return groups.groups()
