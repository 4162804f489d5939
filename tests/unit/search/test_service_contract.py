"""IndexService implements the `shared.clients.IndexClient` contract and guards its rebuilds."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

import services.search.service as service_module
import services.search.serving as serving_module
from services.search.index import fit_quantizer
from services.search.service import IndexService
from shared.clients import IndexClient
from shared.config import Settings
from shared.errors import Conflict
from tests.unit.search.conftest import DIM, StoreVectors, clustered


@pytest.mark.parametrize("method", ["add", "remove", "search", "stats", "start_rebuild",
                                    "rebuild_status"])
def test_service_methods_match_the_index_client_protocol(method: str) -> None:
    """The same parameters and answers as the (async) contract the clients speak."""
    ours = inspect.signature(getattr(IndexService, method))
    theirs = inspect.signature(getattr(IndexClient, method))
    assert list(ours.parameters) == list(theirs.parameters)
    assert [p.default for p in ours.parameters.values()] == \
        [p.default for p in theirs.parameters.values()]
    assert ours.return_annotation == theirs.return_annotation


def test_a_second_rebuild_while_one_runs_is_a_conflict(
        store_vectors: StoreVectors, service: IndexService,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store_vectors(clustered(100, DIM))
    seen: list[Exception] = []

    def build_and_rebuild_again(*args, **kwargs):  # type: ignore[no-untyped-def]
        for again in (service.rebuild, service.start_rebuild):
            try:
                again()
            except Conflict as exc:
                seen.append(exc)
        return fit_quantizer(*args, **kwargs)

    monkeypatch.setattr(serving_module, "fit_quantizer", build_and_rebuild_again)
    assert service.rebuild().exact is False
    assert len(seen) == 2


def test_search_before_load_is_not_ready(settings: Settings,
                                         sessions: sessionmaker[Session]) -> None:
    cold = IndexService(settings, sessions)
    with pytest.raises(service_module.IndexNotReady):
        cold.search(np.ones(DIM, dtype=np.float32), 1)
