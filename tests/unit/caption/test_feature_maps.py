"""The decoder's training maps read from several feature cache files into one array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.caption.training.features import read_maps


def _cache(path: Path, maps: np.ndarray) -> Path:
    np.savez(path, pooled=np.zeros((2, maps.shape[1], 4), np.float16),
             logits=np.zeros((2, maps.shape[1], 3), np.float16), maps=maps)
    return path


def test_the_maps_of_several_files_join_as_concatenation_would(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(2, n, 4, 6)).astype(np.float16) for n in (5, 3, 7)]
    files = [_cache(tmp_path / f"f{i}.npz", p) for i, p in enumerate(parts)]
    joined = np.concatenate(parts, axis=1)
    assert np.array_equal(read_maps(files, 2, chunk=16), joined)  # chunks smaller than a view
    assert np.array_equal(read_maps(files, 1), joined[:1])


def test_maps_of_another_grid_are_refused(tmp_path: Path) -> None:
    files = [_cache(tmp_path / "a.npz", np.zeros((2, 3, 4, 6), np.float16)),
             _cache(tmp_path / "b.npz", np.zeros((2, 3, 9, 6), np.float16))]
    with pytest.raises(ValueError, match="differ in shape"):
        read_maps(files, 2)
