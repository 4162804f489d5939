"""Queries running while the index changes and is rebuilt."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import services.search.serving as serving_module
from services.search.index import ExactIndex, build_ivf, fit_quantizer
from services.search.service import IndexService
from tests.unit.search.conftest import DIM, StoreVectors, clustered


def _hammer(work: list, n_threads: int = 4) -> list[BaseException]:  # type: ignore[type-arg]
    errors: list[BaseException] = []

    def _run(fn) -> None:  # type: ignore[no-untyped-def]
        try:
            fn()
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=_run, args=(fn,)) for fn in work[:n_threads]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_searches_during_adds_and_removes_raise_nothing(kind: str) -> None:
    x = clustered(2_000, 32)
    ids = np.arange(2_000)
    index = ExactIndex(32) if kind == "exact" else build_ivf(ids, x, n_clusters=16,
                                                             pca_components=8)
    index.add(ids, x)

    def mutate(offset: int) -> None:
        rng = np.random.default_rng(offset)
        for _ in range(200):
            batch = rng.integers(0, 2_000, 8)
            index.add(batch, x[rng.integers(0, 2_000, 8)])
            index.remove(rng.integers(0, 2_000, 4))

    def query() -> None:
        for q in x[:300]:
            found, scores = index.search(q, 10, 4)
            assert len(set(found.tolist())) == len(found)  # never a duplicate hit
            assert np.all(np.diff(scores) <= 0)

    errors = _hammer([lambda: mutate(1), lambda: mutate(2), query, query])
    assert errors == []


def test_changes_made_during_a_rebuild_survive_the_swap(
        store_vectors: StoreVectors, service: IndexService,
        monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered(201, DIM)
    store_vectors(x)
    service.add(list(range(1, 201)), x[:200])

    def build_while_changes_arrive(*args, **kwargs):  # type: ignore[no-untyped-def]
        quantizer = fit_quantizer(*args, **kwargs)
        service.add([201], x[200:])  # stored now, handed over mid-rebuild
        service.remove([5])
        return quantizer

    monkeypatch.setattr(serving_module, "fit_quantizer", build_while_changes_arrive)
    built = service.rebuild()
    hits = [h.image_id for h in service.search(x[200], 200, nprobe=8).hits]
    assert built.exact is False
    assert service.stats().size == 200
    assert hits[0] == 201 and 5 not in hits


def test_service_searches_during_adds_and_removes_raise_nothing(
        store_vectors: StoreVectors, service: IndexService) -> None:
    x = clustered(400, DIM)
    store_vectors(x)
    service.rebuild()  # IVF: every change also writes membership rows

    def mutate(offset: int) -> None:
        rng = np.random.default_rng(offset)
        for _ in range(30):
            picked = rng.integers(1, 401, 4)
            service.add(picked.tolist(), x[picked - 1])
            service.remove(rng.integers(1, 401, 2).tolist())

    def query() -> None:
        for q in x[:100]:
            hits = service.search(q, 10).hits
            assert len({h.image_id for h in hits}) == len(hits)

    assert _hammer([lambda: mutate(1), lambda: mutate(2), query, query]) == []
