"""The coarse quantizer of the IVF index: PCA, then K-means centroids in PCA space."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.decomposition import PCA

from services.search.postings import IdArray, Matrix

# Lloyd K-means is exact but O(N*K) per iteration; above this the mini-batch variant is used.
MINIBATCH_ABOVE = 100_000
# fitting needs no more than this many points (PCA) / points per centroid (K-means)
PCA_SAMPLE = 100_000
KMEANS_POINTS_PER_CLUSTER = 256
KMEANS_MAX_ITER = 20
_ASSIGN_CHUNK = 65_536


def default_n_clusters(n_vectors: int) -> int:
    """K of about 4 * sqrt(N), at least 1 and at most N."""
    return max(1, min(n_vectors, round(4 * math.sqrt(n_vectors))))


@dataclass(frozen=True)
class Quantizer:
    """Where a vector belongs: PCA projection, then the nearest K-means centroid."""

    mean: Matrix  # (dim,)
    components: Matrix  # (pca_components, dim)
    centroids: Matrix  # (n_clusters, pca_components), in PCA space
    _centroid_sq: Matrix = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("mean", "components", "centroids"):
            object.__setattr__(self, name,
                               np.ascontiguousarray(getattr(self, name), dtype=np.float32))
        if self.components.shape[1] != self.dim or self.centroids.shape[1] != self.pca_dim:
            raise ValueError("PCA mean, components and centroids disagree on dimensions")
        object.__setattr__(self, "_centroid_sq", np.einsum("ij,ij->i", self.centroids,
                                                           self.centroids))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def pca_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def project(self, vectors: Matrix) -> Matrix:
        return (vectors - self.mean) @ self.components.T

    def assign(self, vectors: Matrix) -> IdArray:
        """The nearest centroid of each (normalised) row, in chunks to bound memory."""
        out = np.empty(vectors.shape[0], dtype=np.int64)
        for start in range(0, vectors.shape[0], _ASSIGN_CHUNK):
            z = self.project(vectors[start:start + _ASSIGN_CHUNK])
            # |z - c|^2 = |z|^2 - 2 z.c + |c|^2; |z|^2 is the same for every centroid
            out[start:start + z.shape[0]] = np.argmin(self._centroid_sq - 2 * z @ self.centroids.T,
                                                      axis=1)
        return out

    def probe(self, vector: Matrix, nprobe: int) -> IdArray:
        """The `nprobe` lists nearest to one (normalised) query, nearest first."""
        z = self.project(vector.reshape(1, -1))[0]
        dist = self._centroid_sq - 2 * self.centroids @ z
        nprobe = min(nprobe, dist.shape[0])
        near = np.argpartition(dist, nprobe - 1)[:nprobe] if nprobe < dist.shape[0] else \
            np.arange(dist.shape[0])
        return near[np.argsort(dist[near], kind="stable")]


def fit_quantizer(vectors: Matrix, *, n_clusters: int | None = None, pca_components: int = 64,
                  seed: int = 0) -> Quantizer:
    """Fit PCA on a sample of (normalised) vectors, then K-means in PCA space; deterministic."""
    n, dim = vectors.shape
    if n == 0:
        raise ValueError("cannot fit an index on no vectors")
    rng = np.random.default_rng(seed)
    k = min(n, n_clusters or default_n_clusters(n))
    pca_sample = _sample(vectors, PCA_SAMPLE, rng)
    n_comp = min(pca_components, dim, pca_sample.shape[0])
    pca = PCA(n_components=n_comp, random_state=seed).fit(pca_sample)
    components = pca.components_.astype(np.float32)
    mean = pca.mean_.astype(np.float32)
    train = (_sample(vectors, KMEANS_POINTS_PER_CLUSTER * k, rng) - mean) @ components.T
    if train.shape[0] > MINIBATCH_ABOVE:
        km: KMeans | MiniBatchKMeans = MiniBatchKMeans(
            n_clusters=k, batch_size=4096, n_init=3, max_iter=KMEANS_MAX_ITER, random_state=seed)
    else:
        km = KMeans(n_clusters=k, n_init=1, max_iter=KMEANS_MAX_ITER, random_state=seed)
    km.fit(train)
    return Quantizer(mean=mean, components=components,
                     centroids=km.cluster_centers_.astype(np.float32))


def _sample(vectors: Matrix, size: int, rng: np.random.Generator) -> Matrix:
    if vectors.shape[0] <= size:
        return vectors
    return vectors[np.sort(rng.choice(vectors.shape[0], size=size, replace=False))]
