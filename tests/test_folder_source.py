"""FolderSource: a lab's image files and labels CSVs read into memory, and one-line errors for what goes wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alvae_pl.data.image_data import UNKNOWN_TARGET
from alvae_pl.data.sources import FolderSource


def _write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def _gray(folder: Path, name: str, value: int, size: int = 12) -> np.ndarray:
    pixels = np.full((size, size), value, dtype=np.uint8)
    pixels[0, 0] = 255 - value  # not flat, so that a wrong orientation or crop would show
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return pixels


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """Five pool images (one in a subfolder), two of them labeled; two validation images in the same folder."""
    images = tmp_path / "images"
    for i, name in enumerate(["a.png", "b.png", "c.png", "sub/d.png", "e.png", "v1.png", "v2.png"]):
        _gray(images, name, 10 * i)
    (images / ".hidden.png").write_bytes(b"not an image, and hidden: skipped")
    _write(tmp_path / "labels.csv", "file,label\nc.png,cat\nsub/d.png,dog\n")
    _write(tmp_path / "val.csv", "file,label\nv1.png,dog\nv2.png,cat\n")
    return tmp_path


def test_folder_pool_is_the_images_less_validation_with_unknown_targets(lab: Path) -> None:
    data = FolderSource(str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), image_size=12).load()

    assert data.train_files == ("a.png", "b.png", "c.png", "e.png", "sub/d.png")
    assert data.task == "multiclass" and data.class_names == ("cat", "dog")
    assert data.train.targets.tolist() == [UNKNOWN_TARGET, UNKNOWN_TARGET, 0, UNKNOWN_TARGET, 1]
    assert data.train_known.tolist() == [False, False, True, False, True]
    assert data.val.targets.tolist() == [1, 0] and len(data.test) == 0
    assert data.train.images.shape == (5, 1, 12, 12) and data.train.images.dtype == torch.uint8
    with Image.open(lab / "images" / "sub" / "d.png") as image:  # the exact pixels, same size: no resampling
        assert torch.equal(data.train.images[4, 0], torch.from_numpy(np.array(image)))


def test_folder_reads_rgb_jpeg_and_16_bit_tiff_resized(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), (200, 10, 10), dtype=np.uint8)).save(folder / "red.png")
    Image.fromarray(np.full((16, 16), 65535, dtype=np.uint16)).save(folder / "white16.tif")
    Image.fromarray(np.full((8, 8), 0, dtype=np.uint8)).save(folder / "black.jpg")
    val = _write(tmp_path / "val.csv", "file,label\nblack.jpg,x\nred.png,y\n")

    data = FolderSource(str(folder), None, val, image_size=10, color="rgb").load()
    assert data.num_channels == 3 and data.image_size == 10
    assert data.train_files == ("white16.tif",) and not data.train_known.any()
    assert (data.train.images == 255).all()  # 16 bits scaled to 8
    assert data.val.images[1, :, 5, 5].tolist() == [200, 10, 10]
    with pytest.warns(UserWarning, match="1 of 3 images are color") as caught:  # two gray images of three: gray
        gray = FolderSource(str(folder), None, val, image_size=10).load()
    assert gray.num_channels == 1 and int(gray.val.images[1, 0, 5, 5]) == round(0.299 * 200 + 0.587 * 10 + 0.114 * 10)
    assert any("red.png (30 x 20)" in str(w.message) for w in caught)  # stretched to a square: named


def test_folder_multilabel_findings_from_the_header(tmp_path: Path) -> None:
    images, val_images = tmp_path / "pool", tmp_path / "val"
    for name in ("x.png", "y.png", "z.png"):
        _gray(images, name, 50)
    _gray(val_images, "v.png", 60)
    labels = _write(tmp_path / "labels.csv", "file,mass,effusion\ny.png,1,0\n")
    val = _write(tmp_path / "val.csv", "file,effusion,mass\nv.png,1,1\n")

    data = FolderSource(str(images), labels, val, val_images=str(val_images), image_size=12).load()
    assert data.task == "multilabel" and data.class_names == ("mass", "effusion")
    assert data.train.targets.tolist() == [[-1, -1], [1, 0], [-1, -1]]
    assert data.train_known.tolist() == [False, True, False]
    assert data.val.targets.tolist() == [[1, 1]] and data.train_files == ("x.png", "y.png", "z.png")


@pytest.mark.parametrize(
    ("labels", "val", "expected"),
    [
        ("file,label\nc.png,cat\nc.png,dog\n", None, "labels.csv line 3: c.png is already in line 2"),
        ("file,label\nc.png,bird\n", None, "labels.csv line 2: unknown class 'bird' for c.png; known: cat, dog"),
        ("file,label\nmissing.png,cat\n", None, "labels.csv line 2: missing.png is not an image in"),
        ("file,label\nv1.png,cat\n", None, "labels.csv line 2: v1.png is a validation/test image"),
        ("file,label\nc.png,\n", None, "labels.csv line 2: c.png has no label; fill it in or delete the row"),
        ("name,label\nc.png,cat\n", None, "has no 'file' column"),
        (None, "file,label\nv1.png,dog\nnothere.png,cat\n", "val.csv line 3: no image nothere.png in"),
        ("file,mass\nc.png,1\n", None, "some have a 'label' column (multi-class) and some finding columns"),
    ],
)
def test_folder_label_errors_name_the_file_and_line(lab: Path, labels: str | None, val: str | None, expected: str):
    if labels is not None:
        _write(lab / "labels.csv", labels)
    if val is not None:
        _write(lab / "val.csv", val)
    source = FolderSource(str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv"), classes=["cat", "dog"])
    with pytest.raises(ValueError) as error:
        source.load()
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_folder_unreadable_image_and_missing_settings_are_one_line_errors(lab: Path) -> None:
    (lab / "images" / "broken.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match=r"1 image is not readable \(.*broken.png; each listed below\): replace"):
        FolderSource(str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv")).load()
    with pytest.raises(ValueError, match="FolderSource needs labeled validation images"):
        FolderSource(str(lab / "images"), str(lab / "labels.csv")).load()
    with pytest.raises(FileNotFoundError, match="is not a folder: set data.source.init_args.images"):
        FolderSource(str(lab / "nowhere"), None, str(lab / "val.csv")).load()


def test_every_unreadable_image_is_listed_in_one_error(lab: Path) -> None:
    broken = ["broken_1.png", "sub/broken_2.jpg", "x/broken_3.png", "x/broken_4.tif"]
    for name in broken:
        (lab / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (lab / "images" / name).write_bytes(b"not an image")
    with pytest.raises(ValueError) as error:
        FolderSource(str(lab / "images"), str(lab / "labels.csv"), str(lab / "val.csv")).load()
    first, *listed = str(error.value).splitlines()
    assert first.startswith("4 images are not readable (") and "and 1 more; each listed below" in first
    assert [line.split(": ")[0].strip() for line in listed] == [str(lab / "images" / name) for name in sorted(broken)]
    assert all("UnidentifiedImageError" in line for line in listed)


def test_the_majority_decides_gray_or_color_and_odd_images_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    gray = [_gray(folder, f"g{i}.png", 20 * i) for i in range(3)]
    rgb = np.zeros((12, 12, 3), dtype=np.uint8)
    rgb[..., 0] = 250
    Image.fromarray(rgb).save(folder / "odd.jpg", quality=100)
    Image.fromarray(np.full((120, 300), 90, dtype=np.uint8)).save(folder / "wide.png")
    val = _write(tmp_path / "val.csv", "file,label\ng0.png,a\ng1.png,b\n")

    with pytest.warns(UserWarning) as caught:
        data = FolderSource(str(folder), None, val, image_size=12).load()
    messages = [str(w.message) for w in caught]
    assert data.num_channels == 1  # four gray images and one color one: gray, not silently RGB
    assert any(m.startswith("1 of 5 images are color (e.g. ") and "odd.jpg" in m for m in messages)
    assert any(m.startswith("1 of 5 images are not square") and "wide.png (300 x 120)" in m for m in messages)
    assert torch.equal(data.val.images[:, 0], torch.from_numpy(np.stack(gray[:2])))  # gray images untouched
    odd = data.train_files.index("odd.jpg")
    with Image.open(folder / "odd.jpg") as image:  # the color image is PIL's own luma of its pixels
        luma = np.asarray(image.convert("RGB"), dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert torch.equal(data.train.images[odd, 0], torch.from_numpy(luma.round().astype(np.uint8)))

    for name in ("c1.png", "c2.png", "c3.png", "c4.png"):  # now most images are color: RGB, the gray ones repeated
        Image.fromarray(rgb).save(folder / name)
    with pytest.warns(UserWarning, match=r"4 of 9 images are grayscale \(e.g. .*g\d.png\) and were converted to RGB"):
        color = FolderSource(str(folder), None, val, image_size=12).load()
    assert color.num_channels == 3 and torch.equal(color.val.images[0, 0], color.val.images[0, 2])
    assert color.val_files == ("g0.png", "g1.png") and color.test_files == ()
