"""The transformer caption decoder, its training and the beam search shared with `sat`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from services.caption.sat.beam import beam_search
from services.caption.sat.checkpoint import SatCheckpoint, load_checkpoint, save_checkpoint
from services.caption.sat.transformer import CaptionTransformer, DecoderConfig
from services.caption.sat.vocab import Vocabulary
from services.caption.training.train_sat import ValidationSet
from services.caption.training.train_transformer import (
    TransformerTrainOptions,
    train_transformer,
)

TINY = {"width": 32, "layers": 2, "heads": 2, "ff_dim": 64, "dropout": 0.0}


def tiny_model(vocab: int = 12, regions: int = 4, features: int = 8) -> CaptionTransformer:
    torch.manual_seed(0)
    return CaptionTransformer(DecoderConfig(vocab_size=vocab, regions=regions,
                                            feature_dim=features, **TINY)).eval()


def test_cached_steps_give_the_logits_of_the_whole_caption_at_once() -> None:
    model = tiny_model()
    features = torch.randn(3, 4, 8)
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 9, 2, 0], [1, 4, 4, 4, 2]])
    with torch.no_grad():
        whole = model(features, tokens)
        state = model.start(features)
        steps = []
        for t in range(tokens.shape[1] - 1):
            logits, state, _ = model.step(tokens[:, t], state)
            steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), whole, atol=1e-5)


def test_captions_of_one_photo_share_its_regions() -> None:
    model = tiny_model()
    features = torch.randn(2, 4, 8)
    tokens = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 8, 9, 2]])
    owner = torch.tensor([0, 0, 1])
    with torch.no_grad():
        shared = model(features, tokens, owner)
        repeated = model(features[owner], tokens)
    assert torch.allclose(shared, repeated, atol=1e-6)


def test_a_grid_of_another_size_is_refused_with_the_setting_to_change() -> None:
    with pytest.raises(ValueError, match="CAPSEARCH_BACKBONE_IMAGE_SIZE"):
        tiny_model().start(torch.randn(1, 9, 8))


def test_checkpoint_round_trip_keeps_the_outputs(tmp_path: Path) -> None:
    model = tiny_model()
    vocab = Vocabulary([*Vocabulary.build([]).words, *[f"w{i}" for i in range(8)]])
    save_checkpoint(tmp_path / "c.pt", SatCheckpoint(model, vocab, {"note": "x"}))
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert isinstance(loaded.model, CaptionTransformer) and loaded.meta["note"] == "x"
    features = torch.randn(2, 4, 8)
    tokens = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    with torch.no_grad():  # float16 on disk: close, not equal
        assert torch.allclose(loaded.model(features, tokens), model(features, tokens),
                              atol=5e-2)


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    torch.save({"format": "something-else"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a caption decoder checkpoint"):
        load_checkpoint(tmp_path / "x.pt")


@dataclass
class _Position:
    t: int

    def select(self, rows: torch.Tensor) -> _Position:
        return self

    reorder = select


class ScriptedDecoder(torch.nn.Module):
    """Next-word probabilities by (step, previous word): w4 = 4, w5 = 5, <end> = 2.

    Step 2 offers two <end>s among the first three candidates of a 2-wide beam: a weak one
    ranked within the beam ("w4 w5", −3.03) and a weaker one just outside it ("w4 w4", −3.16);
    one step later "w4 w4 w4" ends at −0.33, the best caption."""

    config = SimpleNamespace(max_words=6)
    table = {
        (0, 1): {4: .9, 5: .1},
        (1, 4): {4: .94, 5: .06}, (1, 5): {4: .5, 5: .5},
        (2, 4): {4: .94, 2: .05, 5: .01}, (2, 5): {2: .9, 4: .05, 5: .05},
    }

    def start(self, features: torch.Tensor, beams: int = 1) -> _Position:
        return _Position(0)

    def step(self, words: torch.Tensor, state: _Position
             ) -> tuple[torch.Tensor, _Position, None]:
        probs = torch.full((len(words), 6), 1e-9)
        for i, w in enumerate(words.tolist()):
            row = self.table.get((state.t, w), {2: .9, w: .1})
            for word, p in row.items():
                probs[i, word] = p
        return probs.log(), _Position(state.t + 1), None


def test_beam_search_does_not_stop_on_ends_outside_the_beam() -> None:
    [best] = beam_search(ScriptedDecoder(), torch.zeros(1, 1, 1), beam_width=2)
    assert best == [4, 4, 4]


def test_a_batch_finds_what_each_photo_finds_alone() -> None:
    # settled photos leave the batch and an image's beams share its regions: neither may
    # change any photo's caption
    torch.manual_seed(0)
    model = CaptionTransformer(DecoderConfig(vocab_size=12, regions=4, feature_dim=8,
                                             max_words=8, **TINY)).eval()
    with torch.no_grad():
        model.embed.weight.mul_(8)  # peaked word choices: captions of different lengths
    features = torch.randn(7, 4, 8) * 3
    alone = [beam_search(model, features[i:i + 1], beam_width=3)[0] for i in range(7)]
    assert beam_search(model, features, beam_width=3) == alone
    assert len({len(seq) for seq in alone}) > 1


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny matrices: more threads only wait on each other (10× slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_training_learns_which_caption_goes_with_which_photo(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    captions = [["a dog runs on grass"] * 2, ["a man rides a red bike"] * 2,
                ["two kids swim in a lake"] * 2, ["a cat sleeps on a sofa"] * 2]
    features = rng.normal(size=(1, 4, 4, 8)).astype(np.float16) * 3  # 1 view, 4 photos
    options = TransformerTrainOptions(epochs=30, photos_per_batch=4, lr=1e-2, min_count=1,
                                      weight_decay=0.0, label_smoothing=0.0,
                                      model=TINY)
    val = ValidationSet(torch.from_numpy(features[0].astype(np.float32)), captions)
    checkpoint = train_transformer(captions, features, tmp_path / "t.pt", options=options,
                                   val=val, progress=False)
    regions = torch.from_numpy(features[0].astype(np.float32))
    got = [checkpoint.vocab.decode(s) for s in beam_search(checkpoint.model, regions)]
    assert got == [c[0] for c in captions]
    assert checkpoint.meta["architecture"] == "transformer"
    assert len(checkpoint.meta["history"]) == 30
    again = train_transformer(captions, features, tmp_path / "u.pt", options=options,
                              val=val, progress=False)  # seeded: the same file
    assert again.meta["history"] == checkpoint.meta["history"]
    first, second = checkpoint.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_shipped_decoder_writes_the_same_sentences_in_parallel_streams(
        coco_images: list[Path]) -> None:
    from services.caption.captioners.backbone import EfficientNetBackbone
    from services.caption.captioners.sat import TransformerCaptioner
    from shared.images import decode_rgb

    images = [decode_rgb(p.read_bytes()) for p in coco_images[:6]]
    captions = {}
    for streams in (1, 2):
        backbone = EfficientNetBackbone(device="cpu", image_size=256, streams=streams)
        captioner = TransformerCaptioner(backbone=backbone, batch_size=6)
        captions[streams] = captioner.caption(images)
        captioner.close()
        backbone.close()
    assert captions[1] == captions[2]
    assert all(len(c.split()) >= 4 for c in captions[1])  # sentences, not labels
    assert len(set(captions[1])) >= 4  # about each photo, not one generic line
