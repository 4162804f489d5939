"""Finding photos on disk and the shared data format (`images/` + `captions.tsv`)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def find_images(paths: list[Path]) -> list[Path]:
    """Image files under the given files/folders (recursive), sorted, without duplicates."""
    found: dict[Path, None] = {}
    for path in paths:
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                hidden = p.name.startswith(".")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not hidden:
                    found[p.resolve()] = None
        elif path.is_file():
            found[path.resolve()] = None
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return list(found)


def read_captions(tsv: Path) -> dict[str, list[str]]:
    """`image<TAB>caption` rows (with header) → {file name: [captions]}."""
    captions: dict[str, list[str]] = defaultdict(list)
    with tsv.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if not reader.fieldnames or {"image", "caption"} - set(reader.fieldnames):
            raise ValueError(f"{tsv}: expected a header 'image<TAB>caption'")
        for row in reader:
            if row["image"] and row["caption"]:
                captions[row["image"].strip()].append(row["caption"].strip())
    return dict(captions)


def bundled_sample_photos() -> list[Path]:
    """Real photos that ship inside installed packages (scikit-learn, scikit-image)."""
    import skimage.data
    import sklearn.datasets

    sk = Path(sklearn.datasets.__file__).parent / "images"
    ski = Path(skimage.data.__file__).parent
    names = [sk / "china.jpg", sk / "flower.jpg"] + [
        ski / n
        for n in (
            "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
            "camera.png", "hubble_deep_field.jpg", "moon.png", "brick.png", "grass.png",
            "coins.png", "retina.jpg",
        )
    ]
    return [p for p in names if p.is_file()]
