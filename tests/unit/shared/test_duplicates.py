"""Near-duplicate grouping: the space, band keys, candidates, confirmation, groups."""

from __future__ import annotations

import numpy as np
import pytest

from shared.duplicates import (
    BandHasher,
    DuplicateGroup,
    DuplicateGroups,
    DuplicateSpace,
    candidate_pairs,
    confirm,
    group_collection,
    matches,
    unit_rows,
)


def _near(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at the given cosine to unit vector v."""
    noise = rng.standard_normal(v.shape).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    return (cosine * v + np.sqrt(1 - cosine ** 2) * noise).astype(np.float32)


def test_space_centres_and_reduces_to_unit_vectors() -> None:
    rng = np.random.default_rng(0)
    features = np.abs(rng.standard_normal((300, 40))).astype(np.float32) + 1.0
    space = DuplicateSpace.fit(features, dim=8)
    projected = space.project(features)
    assert projected.shape == (300, 8)
    assert np.allclose(np.linalg.norm(projected, axis=1), 1.0, atol=1e-5)
    # all-positive features sit close together raw; centred they spread out
    raw = unit_rows(features)
    assert (raw @ raw.T).mean() > 0.8
    assert abs((projected @ projected.T).mean()) < 0.1


def test_band_keys_are_stable_and_in_range() -> None:
    rng = np.random.default_rng(1)
    v = unit_rows(rng.standard_normal((5, 16)))
    a, b = BandHasher(16, bands=4, bits=10), BandHasher(16, bands=4, bits=10)
    keys = a.keys(v)
    assert keys.shape == (5, 4) and keys.dtype == np.int64
    assert np.array_equal(keys, b.keys(v))  # same seed → same planes in any process
    assert keys.min() >= 0 and keys.max() < 2 ** 10
    assert not np.array_equal(keys, BandHasher(16, bands=4, bits=10, seed=2).keys(v))


def test_band_hasher_refuses_keys_wider_than_an_int64() -> None:
    with pytest.raises(ValueError):
        BandHasher(8, bits=63)


def test_candidate_probability_follows_the_angle() -> None:
    hasher = BandHasher(64, bands=16, bits=16)
    assert hasher.candidate_probability(1.0) == pytest.approx(1.0)
    assert hasher.candidate_probability(0.98) > 0.99
    assert 0.9 < hasher.candidate_probability(0.95) < 0.99
    assert hasher.candidate_probability(0.0) < 0.01


def test_near_copies_meet_as_candidates_and_unrelated_vectors_mostly_do_not() -> None:
    rng = np.random.default_rng(2)
    base = unit_rows(rng.standard_normal((400, 64)))
    copies = np.stack([_near(v, 0.98, rng) for v in base])
    hasher = BandHasher(64, bands=16, bits=16)
    met = (hasher.keys(copies) == hasher.keys(base)).any(axis=1).mean()
    assert met > 0.98
    collisions = len(candidate_pairs(hasher.keys(base)))
    assert collisions < 0.001 * 400 * 399 / 2


def test_candidate_pairs_lists_each_sharing_pair_once_and_skips_huge_buckets() -> None:
    keys = np.array([[1, 7], [1, 7], [2, 7], [3, 9]], dtype=np.int64)
    assert candidate_pairs(keys).tolist() == [[0, 1], [0, 2], [1, 2]]
    assert candidate_pairs(keys, max_bucket=2).tolist() == [[0, 1]]
    assert candidate_pairs(np.zeros((0, 2), dtype=np.int64)).shape == (0, 2)


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
    vectors = np.vstack([base, _near(base[5], 0.97, rng), _near(base[42], 0.93, rng)])
    ids = list(range(1000, 1000 + len(vectors)))
    found = group_collection(ids, vectors, BandHasher(64), threshold=0.85)
    assert [g.ids for g in found] == [(1005, 1300), (1042, 1301)]
