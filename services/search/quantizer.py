"""The coarse quantizer of the IVF index: PCA, then K-means centroids in PCA space."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.cluster import KMeans, MiniBatchKMeans

from services.search.kernel import native
from services.search.postings import IdArray, Matrix, about_smallest

# K-means trains on at most KMEANS_POINTS_PER_CLUSTER * K points, so Lloyd's algorithm (whose
# clusters probe clearly better than MiniBatchKMeans' at the same budget) stays affordable;
# above this many training points the mini-batch variant would take over.
MINIBATCH_ABOVE = 2_000_000
# fitting needs no more than this many points (PCA) / points per centroid (K-means)
PCA_SAMPLE = 100_000
KMEANS_POINTS_PER_CLUSTER = 64
KMEANS_MAX_ITER = 12
# Lloyd iterations in the full space after the PCA-space fit
FULL_SPACE_ITERS = 6
# a probe's first (PCA-space) stage keeps this many centroids per list it will probe, and
# this many more; the second stage gathers their full-space rows, so fewer is faster. Against an
# exact full-space probe, recall@10 at 200k vectors, nprobe 3: 2 * 3 + 12 loses nothing; at 1M,
# nprobe 24: 3 * 24 + 24 loses 0.004, 2 * 24 + 12 loses 0.008
PROBE_SHORTLIST = 3
PROBE_MIN_SHORTLIST = 12
_ASSIGN_CHUNK = 8_192


def default_n_clusters(n_vectors: int) -> int:
    """K of about 4 * sqrt(N), at least 1 and at most N."""
    return max(1, min(n_vectors, round(4 * math.sqrt(n_vectors))))


@dataclass(frozen=True)
class Quantizer:
    """Where a vector belongs: the nearest of K centroids, found through a PCA projection.

    Centroids live in the full space (K-means is fitted in PCA space, then refined there).
    A query probes in two stages: PCA-space distances to every centroid pick a short list,
    full-space distances pick the `nprobe` nearest from it; about the cost of a PCA-only probe,
    the lists of a full one. The projection also gives each vector its short row for the
    PCA scan (`scan="pca"`): `reduce` appends x.mean to z = (x - mean) W^T, so
    z_x . z_q + x.mean ranks candidates as x.q does, up to the part outside the PCA subspace
    (the re-rank restores it).
    """

    mean: Matrix  # (dim,)
    components: Matrix  # (pca_components, dim)
    centroids: Matrix  # (n_clusters, dim), in the full space
    _sq: Matrix = field(init=False, repr=False, compare=False)
    _mean_proj: Matrix = field(init=False, repr=False, compare=False)
    _red_m2: Matrix = field(init=False, repr=False, compare=False)
    _probe_bias: Matrix = field(init=False, repr=False, compare=False)
    _half_sq: Matrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("mean", "components", "centroids"):
            object.__setattr__(self, name,
                               np.ascontiguousarray(getattr(self, name), dtype=np.float32))
        if self.components.shape[1] != self.dim or self.centroids.shape[1] != self.dim:
            raise ValueError("PCA mean, components and centroids disagree on dimensions")
        mean_proj = self.components @ self.mean
        red = self.centroids @ self.components.T - mean_proj
        object.__setattr__(self, "_mean_proj", mean_proj)
        object.__setattr__(self, "_sq", np.einsum("ij,ij->i", self.centroids, self.centroids))
        object.__setattr__(self, "_red_m2", np.ascontiguousarray(-2.0 * red))
        # stage 1 of a probe on P q alone: |z_c|^2 - 2 z_c.(P q - P mean) = -2 z_c.P q + bias
        object.__setattr__(self, "_probe_bias",
                           np.einsum("ij,ij->i", red, red) - self._red_m2 @ mean_proj)
        object.__setattr__(self, "_half_sq", 0.5 * self._sq)

    @classmethod
    def from_pca_centroids(cls, mean: Matrix, components: Matrix, centroids: Matrix
                           ) -> Quantizer:
        """A quantizer from centroids stored in PCA space (older versions): lift them back."""
        return cls(mean=mean, components=components, centroids=mean + centroids @ components)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def pca_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.mean.nbytes + self.components.nbytes + self.centroids.nbytes
                   + self._red_m2.nbytes + 3 * self._sq.nbytes)

    def project(self, vectors: Matrix) -> Matrix:
        return vectors @ self.components.T - self._mean_proj

    def reduce(self, vectors: Matrix) -> Matrix:
        """The (n, pca_dim + 1) PCA-space rows the IVF scan scores: [z, x.mean]."""
        out = np.empty((vectors.shape[0], self.pca_dim + 1), dtype=np.float32)
        out[:, :-1] = self.project(vectors)
        out[:, -1] = vectors @ self.mean
        return out

    def assign(self, vectors: Matrix) -> IdArray:
        """The nearest centroid of each (normalised) row."""
        lists = np.empty(vectors.shape[0], dtype=np.int64)
        for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
            chunk = vectors[start:start + _ASSIGN_CHUNK]
            lists[start:start + chunk.shape[0]] = nearest(chunk, self.centroids, self._sq)
        return lists

    def query_row(self, vector: Matrix) -> Matrix:
        """One (normalised) query as [z_q, 1]: dotted with `reduce` rows it ranks like x.q."""
        out = np.empty(self.pca_dim + 1, dtype=np.float32)
        np.subtract(self.components @ vector, self._mean_proj, out=out[:-1])
        out[-1] = 1.0
        return out

    def probe(self, vector: Matrix, nprobe: int) -> IdArray:
        """The `nprobe` lists nearest to one (normalised) query, nearest first."""
        near = self.probe_fast(vector, nprobe)
        exact = self._sq[near] - 2.0 * (self.centroids[near] @ vector)
        return near[np.argsort(exact, kind="stable")]

    def probe_fast(self, vector: Matrix, nprobe: int) -> IdArray:
        """The `nprobe` lists nearest to one (normalised) query, in no order, in as few numpy
        calls as it takes (the single-query path).

        Stage 1: PCA-space distances to every centroid (the PCA mean folded into a bias, |z_q|^2
        left out: the same for all) pick a short list of about 3 per list to probe; stage 2:
        full-space distances (c.q - |c|^2/2, largest nearest) pick the `nprobe` from it.
        The compiled kernel (`kernel.native`) does both in one call, its short list exact.
        """
        k = self._sq.shape[0]
        if nprobe >= k:
            return np.arange(k)
        nprobe = max(1, nprobe)
        m = PROBE_SHORTLIST * nprobe + PROBE_MIN_SHORTLIST
        if native is not None and vector.dtype == np.float32 and vector.flags.c_contiguous:
            out = np.empty(nprobe, dtype=np.int64)  # the same two stages, nearest first
            found = native.probe(self.components, self._red_m2, self._probe_bias,
                                 self.centroids, self._half_sq, vector, m, out)
            return out[:found]
        approx = np.dot(self._red_m2, np.dot(self.components, vector))
        approx += self._probe_bias
        short = about_smallest(approx, m, min(m, nprobe + PROBE_MIN_SHORTLIST // 2))
        near = np.dot(self.centroids.take(short, axis=0), vector)
        near -= self._half_sq.take(short)
        cut = short.shape[0] - nprobe
        return short.take(np.argpartition(near, cut)[cut:])

    def probe_many(self, vectors: Matrix, nprobe: int) -> IdArray:
        """The `nprobe` nearest lists of each query of a batch: (n, nprobe), in no order."""
        dist = vectors @ (-2.0 * self.centroids.T)
        dist += self._sq
        if nprobe >= dist.shape[1]:
            return np.broadcast_to(np.arange(dist.shape[1]), dist.shape).copy()
        return np.argpartition(dist, nprobe - 1, axis=1)[:, :nprobe].astype(np.int64)


def nearest(vectors: Matrix, centroids: Matrix, sq: Matrix) -> IdArray:
    """The nearest centroid of each row: argmin |c|^2 - 2 x.c (|x|^2 is the same for all c)."""
    scores = vectors @ centroids.T
    scores *= -2.0
    scores += sq
    return np.argmin(scores, axis=1).astype(np.int64)


def fit_quantizer(vectors: Matrix, *, n_clusters: int | None = None, pca_components: int = 64,
                  seed: int = 0) -> Quantizer:
    """PCA on a sample; K-means on a sample in PCA space, refined by Lloyd steps in the full
    space (PCA-space clusters alone probe badly when the PCA keeps ~75% of the variance, as it
    does for sentence embeddings). Deterministic for a seed."""
    n, dim = vectors.shape
    if n == 0:
        raise ValueError("cannot fit an index on no vectors")
    rng = np.random.default_rng(seed)
    k = min(n, n_clusters or default_n_clusters(n))
    mean, components = _fit_pca(_sample(vectors, PCA_SAMPLE, rng), pca_components)
    train = _sample(vectors, KMEANS_POINTS_PER_CLUSTER * k, rng)
    z = train @ components.T - components @ mean
    if z.shape[0] > MINIBATCH_ABOVE:
        km: KMeans | MiniBatchKMeans = MiniBatchKMeans(
            n_clusters=k, batch_size=8192, n_init=1, init="random", max_iter=KMEANS_MAX_ITER,
            max_no_improvement=5, random_state=seed)
    else:
        km = KMeans(n_clusters=k, n_init=1, init="random", max_iter=KMEANS_MAX_ITER,
                    random_state=seed)
    labels = km.fit_predict(z)
    centroids = _cluster_means(train, labels, mean + km.cluster_centers_ @ components)
    for _ in range(FULL_SPACE_ITERS):
        sq = np.einsum("ij,ij->i", centroids, centroids)
        labels = np.concatenate([nearest(train[s:s + _ASSIGN_CHUNK], centroids, sq)
                                 for s in range(0, train.shape[0], _ASSIGN_CHUNK)])
        centroids = _cluster_means(train, labels, centroids)
    return Quantizer(mean=mean, components=components, centroids=centroids)


def _cluster_means(points: Matrix, labels: IdArray, fallback: Matrix) -> Matrix:
    """The mean of each cluster's points; an empty cluster keeps its fallback centroid."""
    k = fallback.shape[0]
    onehot = sparse.csr_matrix((np.ones(labels.shape[0], dtype=np.float32),
                                (labels, np.arange(labels.shape[0]))), shape=(k, points.shape[0]))
    sums = np.asarray(onehot @ points, dtype=np.float32)
    counts = np.bincount(labels, minlength=k).astype(np.float32)
    out = fallback.astype(np.float32, copy=True)
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled, None]
    return out


def _fit_pca(sample: Matrix, n_components: int) -> tuple[Matrix, Matrix]:
    """Mean and top principal axes, from the covariance matrix (dim x dim: fast, exact)."""
    mean = sample.mean(axis=0, dtype=np.float64)
    centred = sample.astype(np.float64) - mean
    cov = centred.T @ centred / max(1, sample.shape[0] - 1)
    values, vectors = np.linalg.eigh(cov)
    n_comp = min(n_components, sample.shape[1], sample.shape[0])
    top = vectors[:, np.argsort(values)[::-1][:n_comp]].T
    # a fixed sign per axis, so the fit is the same whatever LAPACK returns
    top *= np.where(top[np.arange(n_comp), np.abs(top).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    return mean.astype(np.float32), np.ascontiguousarray(top, dtype=np.float32)


def _sample(vectors: Matrix, size: int, rng: np.random.Generator) -> Matrix:
    if vectors.shape[0] <= size:
        return vectors
    return vectors[np.sort(rng.choice(vectors.shape[0], size=size, replace=False))]
