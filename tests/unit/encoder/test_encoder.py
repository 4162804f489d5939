"""BertTextEncoder: loading any BERT checkpoint dir, pooling, order, batching."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from services.encoder.encoder import BertTextEncoder, TextEncoder, build_text_encoder
from shared.config import Settings

TEXTS = ["a dog", "the cat runs through the grass on the beach", "zebra", "a man",
         "red car on the street", ""]


def test_loads_an_arbitrary_bert_checkpoint_directory(tiny_encoder: BertTextEncoder) -> None:
    assert tiny_encoder.loaded
    assert tiny_encoder.dim == 32
    assert tiny_encoder.name == "tiny-bert"


def test_vectors_are_unit_norm_float32(tiny_encoder: BertTextEncoder) -> None:
    vectors = tiny_encoder.encode(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_input_order_is_kept_across_length_sorted_batches(tiny_encoder: BertTextEncoder) -> None:
    batched = tiny_encoder.encode(TEXTS)  # batch_size 2: texts are regrouped by length
    one_by_one = np.vstack([tiny_encoder.encode([text]) for text in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(tiny_encoder: BertTextEncoder) -> None:
    vectors = tiny_encoder.encode([])
    assert vectors.shape == (0, 32)
    assert vectors.dtype == np.float32


def test_texts_longer_than_max_length_are_truncated(tiny_encoder: BertTextEncoder) -> None:
    long_text = " ".join(["dog"] * 500)
    assert tiny_encoder.encode([long_text]).shape == (1, 32)


def test_a_directory_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        BertTextEncoder(tmp_path, device="cpu").load()


def test_loading_sets_the_hub_offline(tiny_bert_dir: Path) -> None:
    BertTextEncoder(tiny_bert_dir, device="cpu").load()
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_build_text_encoder_reads_the_settings(tiny_bert_dir: Path) -> None:
    settings = Settings(encoder_model_dir=tiny_bert_dir, embedding_model="tiny",
                        encoder_batch_size=7, encoder_max_length=16, device="cpu")
    encoder = build_text_encoder(settings)
    assert (encoder.model_dir, encoder.name, encoder.batch_size, encoder.max_length) == (
        tiny_bert_dir, "tiny", 7, 16)
    assert encoder.device.type == "cpu"
    assert not encoder.loaded


def test_default_model_is_minilm_from_its_package() -> None:
    encoder = build_text_encoder(Settings(device="cpu"))
    assert (encoder.model_dir / "config.json").is_file()
    assert encoder.name == "all-MiniLM-L6-v2"


def test_base_class_chunks_by_batch_size() -> None:
    class Recording(TextEncoder):
        def __init__(self) -> None:
            super().__init__(name="recording", batch_size=3)
            self.batches: list[list[str]] = []

        def _load(self) -> None:
            self.dim = 2

        def _encode(self, batch: list[str]) -> np.ndarray:
            self.batches.append(batch)
            return np.array([[len(t), 1.0] for t in batch], dtype=np.float32)

    encoder = Recording()
    vectors = encoder.encode(["aaaa", "a", "aaaaaaa", "aa", "aaa"])
    assert [len(b) for b in encoder.batches] == [3, 2]
    assert vectors[:, 0].tolist() == [4, 1, 7, 2, 3]


def test_bf16_precision_stays_close_to_fp32(tiny_bert_dir: Path,
                                            tiny_encoder: BertTextEncoder) -> None:
    bf16 = BertTextEncoder(tiny_bert_dir, batch_size=2, max_length=32, device="cpu",
                           precision="bf16")
    assert bf16.precision == "bf16"
    vectors = bf16.encode(TEXTS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * tiny_encoder.encode(TEXTS)).sum(axis=1)
    assert cosines.min() > 0.99
    # every matmul runs on bf16 weights made once at load (no per-call autocast of fp32 weights)
    import torch

    assert not any(isinstance(m, torch.nn.Linear) for m in bf16._model.modules())
    linears = [m for m in bf16._model.modules() if type(m).__name__ == "Bf16Linear"]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(p.dtype == torch.float32 for p in bf16._model.parameters())  # norms, embeddings
    # weights packed for oneDNN (where the op exists) give exactly the plain bf16 results
    for linear in linears:
        linear.packed = None
    np.testing.assert_array_equal(bf16.encode(TEXTS), vectors)


def test_precision_is_fp32_by_default_and_auto_picks_by_hardware(tiny_bert_dir: Path) -> None:
    import torch

    from shared.devices import cpu_has_native_bf16, resolve_cpu_precision

    assert BertTextEncoder(tiny_bert_dir, device="cpu").precision == "fp32"
    auto = BertTextEncoder(tiny_bert_dir, device="cpu", precision="auto").precision
    assert auto == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_cpu_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        resolve_cpu_precision("int4", torch.device("cpu"))


def test_build_text_encoder_takes_the_precision_setting(tiny_bert_dir: Path) -> None:
    from shared.devices import cpu_has_native_bf16

    settings = Settings(encoder_model_dir=tiny_bert_dir, device="cpu")
    assert build_text_encoder(settings).precision == ("bf16" if cpu_has_native_bf16()
                                                      else "fp32")
    fp32 = settings.model_copy(update={"encoder_precision": "fp32"})
    assert build_text_encoder(fp32).precision == "fp32"
    assert build_text_encoder(fp32, precision="bf16").precision == "bf16"


def test_streams_split_one_call_into_parallel_batches_in_order() -> None:
    import threading

    class Recording(TextEncoder):
        def __init__(self) -> None:
            super().__init__(name="recording", batch_size=64, streams=2)
            self.batches: list[int] = []
            self.threads: set[str] = set()

        def _load(self) -> None:
            self.dim = 2

        def _encode(self, batch: list[str]) -> np.ndarray:
            self.batches.append(len(batch))
            self.threads.add(threading.current_thread().name)
            return np.array([[len(t), 1.0] for t in batch], dtype=np.float32)

    encoder = Recording()
    texts = ["a" * (1 + (7 * i) % 23) for i in range(20)]
    vectors = encoder.encode(texts)
    assert sorted(encoder.batches) == [10, 10]  # two streams, at least 8 texts each
    assert all(name.startswith("encode") for name in encoder.threads)
    assert vectors[:, 0].tolist() == [len(t) for t in texts]
    encoder.batches.clear()
    encoder.encode(texts[:9])  # too few for two batches of 8: one batch
    assert encoder.batches == [9]
