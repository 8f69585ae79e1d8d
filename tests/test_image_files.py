"""Unreadable files in image folders: named before a run starts, or left out with --skip-bad-images."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import cli_in_process
from PIL import Image
from test_datasets import write_folder

from robustft.errors import UserError
from robustft_plugins.datasets.image_files import bad_images, load_rgb
from robustft_plugins.datasets.imagefolder import ImageFolderData

pytestmark = pytest.mark.usefixtures("one_thread")


def jpeg_bytes(size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def spoil(root: Path) -> dict[str, Path]:
    """Three kinds of bad file in the training split of ``root``: not an image, an empty file, and a JPEG cut
    short after its header (readable header, undecodable data)."""
    folder = root / "train" / "a"
    files = {"text": folder / "notes.png", "empty": folder / "empty.jpg", "truncated": folder / "cut.jpg"}
    files["text"].write_text("this is not an image\n")
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(jpeg_bytes()[:-50])  # the scan data cut short; the header intact
    return files


def test_headers_find_non_images_and_empty_files_but_not_good_ones(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", {"train": {"a": 2, "b": 2}})
    files = spoil(root)
    good = sorted(str(p) for p in (root / "train").rglob("[0-9].*"))
    found = dict(bad_images([*good, str(files["text"]), str(files["empty"])]))
    assert set(found) == {str(files["text"]), str(files["empty"])}
    assert all(found.values())  # each with a reason


def test_a_decompression_bomb_is_bad_and_never_decoded(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels: over the limit (warning range too)
    assert "decompression-bomb" in dict(bad_images([str(path)]))[str(path)]
    with pytest.raises(UserError, match="decompression-bomb limit"):
        load_rgb(str(path))


def test_a_folder_with_bad_files_is_refused_naming_them(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    files = spoil(root)
    with pytest.raises(UserError) as info:
        ImageFolderData().configure(path=str(root)).train()
    message = info.value.message
    assert message.startswith("2 file(s) in ") and str(files["text"]) in message and str(files["empty"]) in message
    assert message.endswith("remove them, or pass --skip-bad-images to leave them out.")


def test_skip_bad_images_leaves_them_out_with_a_count(tmp_path: Path, caplog) -> None:
    root = write_folder(tmp_path / "f", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    spoil(root)
    files = [p for p in (root / "train").rglob("*") if p.is_file()]
    with caplog.at_level(logging.WARNING, logger="robustft"):
        train = ImageFolderData().configure(path=str(root), skip_bad_images=True).train(augment=False)
    # 7 files, 2 with bad headers; the truncated JPEG's header is sound, so it stays until it is decoded
    assert len(files) == 7 and len(train) == 5
    assert any("Left out 2 unreadable image file(s)" in r.getMessage() for r in caplog.records)


def test_a_file_cut_short_is_named_when_decoded(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", {"train": {"a": 1, "b": 1}})
    cut = spoil(root)["truncated"]
    with pytest.raises(UserError, match=r"cannot be decoded .*remove it and resume the run\.$") as info:
        load_rgb(str(cut))
    assert str(cut) in info.value.message


def test_cli_refuses_in_one_sentence_and_skips_on_request(tmp_path: Path, capsys, monkeypatch) -> None:
    root = write_folder(tmp_path / "f", {"train": {"a": 2, "b": 2}, "test": {"a": 2, "b": 1}}, size=(8, 8))
    (root / "test" / "b" / "junk.jpg").write_text("junk")
    args = (
        "eval",
        "--model",
        "scratch:preact-resnet18",
        "--dataset",
        f"imagefolder:{root}",
        "--image-size",
        "8",
        "--norms",
        "inf",
        "--n-ex",
        "3",
        "--steps",
        "1",
        "--quiet",
    )
    refused = cli_in_process(capsys, monkeypatch, *args)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().startswith("error: 1 file(s) in ") and "junk.jpg" in refused.stderr
    assert "Traceback" not in refused.stderr
    skipped = cli_in_process(capsys, monkeypatch, *args, "--skip-bad-images")
    assert skipped.returncode == 0, skipped.stderr
    assert "Left out 1 unreadable image file(s)" in skipped.stderr
