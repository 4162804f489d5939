"""`CAPSEARCH_ENCODER_MODEL_DIR` takes BERT-family checkpoints of other architectures too
(DistilBERT: no token type ids; XLM-RoBERTa: the multilingual family, e.g. multilingual-e5's
tokenizer), each with a tokenizer made here: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.encoder.encoder import BertTextEncoder

WORDS = ("a the dog hund chien beach strand plage runs läuft court on am sur "
         "red rot rouge car auto voiture").split()


def _word_tokenizer(directory: Path, *, pair_ids: bool) -> int:
    """A word-level fast tokenizer with [CLS] … [SEP] framing saved into `directory`;
    returns its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate([*specials, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if pair_ids else [])
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                            model_input_names=names).save_pretrained(directory)
    return len(vocab)


def save_tiny_distilbert(directory: Path) -> Path:
    from transformers import DistilBertConfig, DistilBertModel

    directory.mkdir(parents=True, exist_ok=True)
    size = _word_tokenizer(directory, pair_ids=True)  # ids the model does not take
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=size, dim=32, n_layers=2, n_heads=2,
                                     hidden_dim=64, max_position_embeddings=64)
                    ).save_pretrained(directory)
    return directory


def save_tiny_xlm_roberta(directory: Path) -> Path:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    size = _word_tokenizer(directory, pair_ids=False)
    torch.manual_seed(0)
    XLMRobertaModel(XLMRobertaConfig(vocab_size=size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=70, pad_token_id=0,
                                     type_vocab_size=1), add_pooling_layer=False
                    ).save_pretrained(directory)
    return directory


ARCHITECTURES = pytest.mark.parametrize("save", [save_tiny_distilbert, save_tiny_xlm_roberta],
                                        ids=["distilbert", "xlm-roberta"])


@ARCHITECTURES
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_a_checkpoint_of_another_architecture_loads_and_serves(
        save: object, runtime: str, tmp_path: Path) -> None:
    directory = save(tmp_path / "model")  # type: ignore[operator]
    encoder = BertTextEncoder(directory, name="tiny", batch_size=2, device="cpu",
                              runtime=runtime, cache_dir=tmp_path / "cache")
    texts = ["a dog runs on the beach", "ein hund läuft am strand", "red car", ""]
    vectors = encoder.encode(texts)
    assert encoder.runtime == runtime
    assert encoder.dim == 32
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # batched (length-sorted, padded) and one by one agree: padding is masked out
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)


@ARCHITECTURES
def test_onnx_runtime_serves_another_architecture_as_torch_does(save: object,
                                                                tmp_path: Path) -> None:
    """The export takes the inputs the architecture names (no token_type_ids for DistilBERT;
    XLM-R's tokenizer gives none, its segment 0 is fed): fp32 gives torch's vectors, int8
    stays close."""
    directory = save(tmp_path / "model")  # type: ignore[operator]
    texts = ["a dog runs on the beach", "ein hund läuft am strand", "red car"]
    reference = BertTextEncoder(directory, name="tiny", device="cpu",
                                runtime="torch").encode(texts)
    for precision, bound in (("fp32", 1 - 1e-5), ("int8", 0.9)):
        vectors = BertTextEncoder(directory, name="tiny", device="cpu", precision=precision,
                                  cache_dir=tmp_path / "cache").encode(texts)
        assert (vectors * reference).sum(axis=1).min() > bound, precision
