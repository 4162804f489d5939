"""Encoders for the encoder tests: a tiny random BERT saved to disk, and the real MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.encoder.encoder import BertTextEncoder

TINY_WORDS = ("the a an dog dogs cat runs run through grass on in photo of plate food table "
              "red blue man woman child ball beach water street car").split()


def save_tiny_bert(directory: Path) -> Path:
    """A randomly initialised 2-layer, 32-d BERT and a WordPiece vocab, as a checkpoint dir."""
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS]) + "\n")
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(TINY_WORDS) + 5, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> BertTextEncoder:
    # its ONNX export in a folder of the test's, not the user's cache
    encoder = BertTextEncoder(tiny_bert_dir, name="tiny-bert", batch_size=2, max_length=32,
                              device="cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    encoder.load()
    return encoder


@pytest.fixture(scope="session")
def minilm() -> BertTextEncoder:
    encoder = BertTextEncoder(device="cpu")
    encoder.load()
    return encoder
