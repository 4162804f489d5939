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


def test_loading_sets_the_hub_offline(tiny_bert_dir: Path, tmp_path: Path) -> None:
    BertTextEncoder(tiny_bert_dir, device="cpu", cache_dir=tmp_path).load()
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


def test_onnx_runtime_fp32_gives_torch_vectors(tiny_bert_dir: Path, tmp_path: Path) -> None:
    """The default CPU runtime (ONNX Runtime over a cached, fused export) gives the torch
    model's vectors within a tight cosine bound, for any batch and padding."""
    torch_enc = BertTextEncoder(tiny_bert_dir, batch_size=2, max_length=32, device="cpu",
                                runtime="torch")
    onnx_enc = BertTextEncoder(tiny_bert_dir, batch_size=3, max_length=32, device="cpu",
                               cache_dir=tmp_path)
    assert (onnx_enc.runtime, onnx_enc.precision) == ("onnx", "fp32")
    reference, vectors = torch_enc.encode(TEXTS), onnx_enc.encode(TEXTS)
    assert vectors.dtype == np.float32
    assert (vectors * reference).sum(axis=1).min() > 1 - 1e-5
    (export,) = (tmp_path / "onnx").glob("*.onnx")
    assert export.name.startswith("tiny-bert-fp32-") or export.name.startswith(
        "all-MiniLM-L6-v2-fp32-")


def test_onnx_runtime_int8_stays_close_and_is_cached_apart(tiny_bert_dir: Path,
                                                           tmp_path: Path) -> None:
    fp32 = BertTextEncoder(tiny_bert_dir, name="tiny", device="cpu", cache_dir=tmp_path)
    int8 = BertTextEncoder(tiny_bert_dir, name="tiny", device="cpu", precision="int8",
                           cache_dir=tmp_path)
    vectors = int8.encode(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (vectors * fp32.encode(TEXTS)).sum(axis=1).min() > 0.9
    names = sorted(p.name.split("-")[1] for p in (tmp_path / "onnx").glob("*.onnx"))
    assert names == ["fp32", "int8"]


def test_int8_keeps_the_feed_forward_outputs_in_fp32(tiny_bert_dir: Path,
                                                     tmp_path: Path) -> None:
    import onnx

    from services.encoder.export import export_encoder, feed_forward_outputs

    fp32 = onnx.load(str(export_encoder(tiny_bert_dir, name="tiny", precision="fp32",
                                        cache_dir=tmp_path)))
    kept = feed_forward_outputs(fp32)
    assert kept and all("output" in name for name in kept)  # one per block
    int8 = onnx.load(str(export_encoder(tiny_bert_dir, name="tiny", precision="int8",
                                        cache_dir=tmp_path)))
    plain = {n.name for n in int8.graph.node if n.op_type == "MatMul"}
    assert plain == set(kept)  # every other matmul is quantised
    assert any("Integer" in n.op_type or "Quant" in n.op_type for n in int8.graph.node)


def test_precision_and_runtime_resolve_once(tiny_bert_dir: Path) -> None:
    from services.encoder.encoder import AUTO_PRECISION

    assert BertTextEncoder(tiny_bert_dir, device="cpu").precision == "fp32"
    auto = BertTextEncoder(tiny_bert_dir, device="cpu", precision="auto")
    assert (auto.runtime, auto.precision) == ("onnx", AUTO_PRECISION)
    forced = BertTextEncoder(tiny_bert_dir, device="cpu", runtime="torch", precision="int8")
    assert (forced.runtime, forced.precision) == ("torch", "fp32")
    with pytest.raises(ValueError, match="precision"):
        BertTextEncoder(tiny_bert_dir, device="cpu", precision="bf16")  # type: ignore[arg-type]


def test_build_text_encoder_takes_the_runtime_precision_and_thread_settings(
        tiny_bert_dir: Path) -> None:
    settings = Settings(encoder_model_dir=tiny_bert_dir, device="cpu", encoder_precision="int8",
                        encoder_runtime="onnx", torch_threads=3)
    encoder = build_text_encoder(settings)
    assert (encoder.runtime, encoder.precision, encoder.threads) == ("onnx", "int8", 3)
    assert build_text_encoder(settings, precision="fp32", threads=1).threads == 1
    forced = build_text_encoder(settings.model_copy(update={"encoder_runtime": "torch"}))
    assert forced.runtime == "torch"


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
