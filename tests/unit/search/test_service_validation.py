"""IndexService refuses bad input with ValidationFailed / NotFound, never a crash."""

from __future__ import annotations

import numpy as np
import pytest

from services.search.service import IndexService
from shared.errors import NotFound, ValidationFailed
from tests.unit.search.conftest import DIM, StoreVectors, clustered


@pytest.fixture
def filled(store_vectors: StoreVectors, service: IndexService) -> IndexService:
    x = clustered(20, DIM)
    ids = store_vectors(x)
    service.add(ids, x)
    return service


def test_search_with_the_wrong_dimension_is_refused(filled: IndexService) -> None:
    with pytest.raises(ValidationFailed):
        filled.search(np.ones(DIM + 1, dtype=np.float32), 5)


def test_add_with_the_wrong_dimension_is_refused(filled: IndexService) -> None:
    with pytest.raises(ValidationFailed):
        filled.add([1], np.ones((1, DIM + 1), dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_vectors_are_refused(filled: IndexService, bad: float) -> None:
    q = np.ones(DIM, dtype=np.float32)
    q[3] = bad
    with pytest.raises(ValidationFailed):
        filled.search(q, 5)
    with pytest.raises(ValidationFailed):
        filled.add([1], q[None, :])


def test_zero_vector_is_refused(filled: IndexService) -> None:
    with pytest.raises(ValidationFailed):
        filled.search(np.zeros(DIM, dtype=np.float32), 5)


def test_k_below_one_is_refused(filled: IndexService) -> None:
    with pytest.raises(ValidationFailed):
        filled.search(np.ones(DIM, dtype=np.float32), 0)


def test_ids_and_vectors_must_pair_up(filled: IndexService) -> None:
    with pytest.raises(ValidationFailed):
        filled.add([1, 2], np.ones((1, DIM), dtype=np.float32))


def test_add_of_an_unknown_image_is_not_found(filled: IndexService) -> None:
    with pytest.raises(NotFound):
        filled.add([9_999], np.ones((1, DIM), dtype=np.float32))


def test_add_of_an_existing_id_replaces_it(filled: IndexService) -> None:
    x = clustered(20, DIM)
    changed = filled.add([1], x[10:11])
    hits = filled.search(x[10], 3).hits
    assert (changed.count, changed.size) == (1, 20)
    assert sorted(h.image_id for h in hits[:2]) == [1, 11]
