"""Captioned photo collections for training and evaluation: the shared folder format
(`images/` + `captions.tsv`), COCO-format annotations (JSON + image folder) and text-only TSVs."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaptionedImages:
    """Photos and their human captions, in one order (`captions[i]` describe `paths[i]`)."""

    name: str
    paths: tuple[Path, ...]
    captions: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.captions):
            raise ValueError("paths and captions differ in length")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Iterable[int], name: str | None = None) -> CaptionedImages:
        rows = list(indices)
        return CaptionedImages(name or self.name, tuple(self.paths[i] for i in rows),
                               tuple(self.captions[i] for i in rows))

    @property
    def n_captions(self) -> int:
        return sum(len(c) for c in self.captions)


def read_caption_rows(tsv: Path) -> list[tuple[str, str]]:
    """`image<TAB>caption` rows (header required), blank rows skipped, in file order."""
    with tsv.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or {"image", "caption"} - set(reader.fieldnames):
            raise ValueError(f"{tsv}: expected a header 'image<TAB>caption'")
        return [(row["image"].strip(), row["caption"].strip()) for row in reader
                if row.get("image") and row.get("caption")]


def _grouped(rows: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for image, caption in rows:
        groups[image].append(caption)
    return groups


def load_folder(folder: Path, captions_tsv: Path | None = None) -> CaptionedImages:
    """A folder in the shared format; photos without a caption are left out (sorted by name)."""
    folder = Path(folder)
    tsv = captions_tsv or folder / "captions.tsv"
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    if not tsv.is_file():
        raise FileNotFoundError(f"no captions file {tsv} (expected images/ + captions.tsv)")
    groups = _grouped(read_caption_rows(tsv))
    names = sorted(n for n in groups if (images_dir / n).is_file())
    if not names:
        raise FileNotFoundError(f"no captioned photo of {tsv} is in {images_dir}")
    return CaptionedImages(folder.name, tuple(images_dir / n for n in names),
                           tuple(tuple(groups[n]) for n in names))


def load_coco(annotations: Path, images_dir: Path) -> CaptionedImages:
    """COCO-format captions (`images` + `annotations` with `image_id`, `caption`)."""
    data = json.loads(Path(annotations).read_text(encoding="utf-8"))
    files = {int(img["id"]): str(img["file_name"]) for img in data.get("images", [])}
    groups: dict[int, list[str]] = defaultdict(list)
    for ann in data.get("annotations", []):
        text = str(ann.get("caption", "")).strip()
        if text and int(ann["image_id"]) in files:
            groups[int(ann["image_id"])].append(text)
    ids = sorted((i for i in groups if (Path(images_dir) / files[i]).is_file()),
                 key=lambda i: files[i])
    if not ids:
        raise FileNotFoundError(f"no captioned photo of {annotations} is in {images_dir}")
    return CaptionedImages(Path(annotations).stem, tuple(Path(images_dir) / files[i] for i in ids),
                           tuple(tuple(groups[i]) for i in ids))


def load_text_only(tsv: Path) -> list[list[str]]:
    """Captions without photos, grouped by the image they describe (file order)."""
    return list(_grouped(read_caption_rows(tsv)).values())


def concat(sets: Sequence[CaptionedImages], name: str = "train") -> CaptionedImages:
    """Several collections as one (duplicated photo paths are kept once, first wins)."""
    seen: dict[Path, tuple[str, ...]] = {}
    for s in sets:
        for path, caps in zip(s.paths, s.captions, strict=True):
            seen.setdefault(path.resolve(), caps)
    return CaptionedImages(name, tuple(seen), tuple(seen.values()))
