from pathlib import Path

import pytest

from capsearch.files import bundled_sample_photos, find_images, read_captions


def test_find_images_walks_folders_recursively_and_skips_other_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ["x.jpg", "a/y.PNG", "a/b/z.webp", "a/notes.txt", "a/.hidden.jpg"]:
        (tmp_path / rel).write_bytes(b"")
    found = [p.relative_to(tmp_path.resolve()).as_posix() for p in find_images([tmp_path])]
    assert sorted(found) == ["a/b/z.webp", "a/y.PNG", "x.jpg"]


def test_find_images_refuses_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        find_images([tmp_path / "nope"])


def test_read_captions_groups_captions_by_image(tmp_path: Path) -> None:
    tsv = tmp_path / "captions.tsv"
    tsv.write_text('image\tcaption\na.jpg\tA dog "runs" .\na.jpg\tA dog .\nb.jpg\tA cat .\n')
    assert read_captions(tsv) == {"a.jpg": ['A dog "runs" .', "A dog ."], "b.jpg": ["A cat ."]}


def test_read_captions_refuses_a_file_without_the_header(tmp_path: Path) -> None:
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("a.jpg\tA dog .\n")
    with pytest.raises(ValueError, match="header"):
        read_captions(tsv)


def test_bundled_sample_photos_are_real_files_from_installed_packages() -> None:
    photos = bundled_sample_photos()
    assert len(photos) >= 10
    assert all(p.is_file() for p in photos)
