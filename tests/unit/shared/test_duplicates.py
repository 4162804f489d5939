"""Near-duplicate grouping: the space, band keys, candidates, confirmation, groups."""

from __future__ import annotations

import numpy as np
import pytest

from shared.duplicates import (
    DuplicateGroup,
    DuplicateGroups,
    DuplicateSpace,
    confirm,
    group_collection,
    matches,
    pairs_from_neighbours,
    unit_rows,
)


def _near(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at the given cosine to unit vector v."""
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    return (cosine * v + np.sqrt(1 - cosine ** 2) * noise).astype(np.float32)


def test_a_centred_space_spreads_all_positive_features_out() -> None:
    rng = np.random.default_rng(0)
    features = np.abs(rng.standard_normal((300, 40))).astype(np.float32) + 1.0
    space = DuplicateSpace.fit(features, dim=8, centre=True)
    projected = space.project(features)
    assert projected.shape == (300, 8)
    assert np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    # all-positive features sit close together raw; centred they spread out
    raw = unit_rows(features)
    assert (raw @ raw.T).mean() > 0.8
    assert abs((projected @ projected.T).mean()) < 0.1


def test_the_default_space_keeps_the_mean_direction_and_reduces() -> None:
    rng = np.random.default_rng(1)
    features = np.abs(rng.standard_normal((300, 40))).astype(np.float32) + 1.0
    space = DuplicateSpace.fit(features, dim=8)
    projected = space.project(features)
    assert projected.shape == (300, 8)
    np.testing.assert_allclose(space.components @ space.components.T, np.eye(8), atol=1e-5)
    # the first axis is the features' mean direction: every photo has a large share of it
    assert (projected[:, 0] > 0.9).all()


def test_identity_space_is_unit_length_features() -> None:
    x = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    np.testing.assert_allclose(DuplicateSpace.identity(2).project(x), [[0.6, 0.8], [0.0, 1.0]])


def test_pairs_from_neighbours_confirms_each_pair_once_above_the_threshold() -> None:
    ids = [10, 11, 12]
    neighbour_ids = np.array([[10, 11, 12], [11, 10, -1], [12, 10, 11]])
    scores = np.array([[1.0, 0.9, 0.5], [1.0, 0.9, -np.inf], [1.0, 0.5, 0.4]])
    assert pairs_from_neighbours(ids, neighbour_ids, scores, 0.8) == [(10, 11, 0.9)]


def test_confirm_and_matches_keep_only_pairs_at_the_threshold() -> None:
    rng = np.random.default_rng(3)
    a = unit_rows(rng.standard_normal((1, 32)))[0]
    v = np.stack([a, _near(a, 0.9, rng), _near(a, 0.5, rng)])
    kept, scores = confirm(np.array([[0, 1], [0, 2]]), v, 0.85)
    assert kept.tolist() == [[0, 1]] and scores[0] == pytest.approx(0.9, abs=1e-4)
    rows, sims = matches(a, v[1:], 0.85)
    assert rows.tolist() == [0] and sims[0] == pytest.approx(0.9, abs=1e-4)
    assert matches(a, np.zeros((0, 32), dtype=np.float32), 0.85)[0].size == 0


def test_groups_join_incrementally_and_report_the_weakest_link() -> None:
    groups = DuplicateGroups()
    groups.add(10, 11, 0.97)
    groups.add(20, 21, 0.91)
    assert groups.groups() == [DuplicateGroup((10, 11), 0.97), DuplicateGroup((20, 21), 0.91)]
    groups.add(21, 11, 0.88)  # an upload that matches both: the groups merge
    assert groups.groups() == [DuplicateGroup((10, 11, 20, 21), 0.88)]
    assert groups.group_of(21) == 10 and groups.group_of(99) == 99


def test_removing_an_image_splits_its_group_from_the_pairs_left() -> None:
    groups = DuplicateGroups()
    groups.add_all([(1, 2, 0.9), (2, 3, 0.9), (4, 5, 0.95)])
    groups.remove(2)
    assert groups.groups() == [DuplicateGroup((4, 5), 0.95)]
    assert groups.group_of(1) == 1 and groups.group_of(3) == 3


def test_group_collection_finds_the_planted_copies_only() -> None:
    rng = np.random.default_rng(4)
    base = unit_rows(rng.standard_normal((300, 64)))
    vectors = np.vstack([base, _near(base[5], 0.97, rng), _near(base[42], 0.93, rng),
                         _near(base[42], 0.9, rng)])
    ids = np.arange(1000, 1000 + len(vectors))

    def exact(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ vectors.T
        top = np.argsort(-scores, axis=1)[:, :k]
        return ids[top], np.take_along_axis(scores, top, axis=1)

    found = group_collection(ids.tolist(), vectors, exact, threshold=0.85)
    assert [g.ids for g in found] == [(1042, 1301, 1302), (1005, 1300)]
