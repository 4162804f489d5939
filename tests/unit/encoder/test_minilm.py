"""The real MiniLM-L6 checkpoint shipped with the project."""

from __future__ import annotations

import numpy as np
import pytest

from services.encoder.encoder import BertTextEncoder

pytestmark = pytest.mark.slow


def test_minilm_has_384_dimensions(minilm: BertTextEncoder) -> None:
    assert minilm.dim == 384


def test_minilm_ranks_a_paraphrase_above_an_unrelated_sentence(minilm: BertTextEncoder) -> None:
    query, paraphrase, unrelated = minilm.encode([
        "a dog runs through the grass",
        "a puppy is running across a lawn",
        "a plate of pasta on a kitchen table",
    ])
    assert float(np.dot(query, paraphrase)) > float(np.dot(query, unrelated)) + 0.2
