"""A lab's folder streamed into the image store: the same images, targets, names and warnings as the folder read
into memory, unreadable files listed in one error and read again once fixed, a killed build resumed, memory that
does not grow with the pool, and a train.py run through the store equal to one in memory."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alvae_pl.cli import main
from alvae_pl.data import image_store
from alvae_pl.data.digits_folder import write_digits_folder
from alvae_pl.data.image_data import ImageData
from alvae_pl.data.image_store import ImageStore, load_through_store, source_fingerprint
from alvae_pl.data.sources import FolderSource
from alvae_pl.data.sources import folder_source as folder_module
from tests.helpers.cli_runs import REPOSITORY, TINY, read_csv, without_timings


def _gray_png(path: Path, value: int, width: int = 10, height: int = 10) -> None:
    pixels = (np.arange(width * height, dtype=np.int64).reshape(height, width) * 7 + value) % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _color_jpeg(path: Path, value: int) -> None:
    pixels = np.zeros((10, 10, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 250 - value, value, np.arange(10) * 20
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def _lab(folder: Path, color_images: int) -> FolderSource:
    """Gray PNGs (one non-square, one RGB file with gray pixels, nested names with spaces and ü) and
    ``color_images`` RGB JPEGs in the pool; validation images in the pool folder, test images in one of their own."""
    images = folder / "images"
    names = ["a.png", "sub dir/ü 1.png", "sub dir/ü 2.png", "x/b.png", "x/y/c.png", "v1.png", "v2.png"]
    for i, name in enumerate(names):
        _gray_png(images / name, 30 * i)
    _gray_png(images / "wide scan.png", 5, width=16, height=9)
    Image.fromarray(np.full((10, 10, 3), 77, dtype=np.uint8)).save(images / "gray as rgb.png")
    for i in range(color_images):
        _color_jpeg(images / f"color/c{i}.jpg", 20 * i)
    _gray_png(folder / "test" / "t 1.png", 99)
    _color_jpeg(folder / "test" / "t2.jpg", 123)
    (folder / "labels.csv").write_text("file,label\na.png,cat\nsub dir/ü 2.png,dog\n")
    (folder / "val.csv").write_text("file,label\nv1.png,cat\nv2.png,dog\n")
    (folder / "test.csv").write_text("file,label\nt 1.png,dog\nt2.jpg,cat\n")
    return _source(folder)


def _source(folder: Path, color: str = "auto") -> FolderSource:
    return FolderSource(
        str(folder / "images"),
        str(folder / "labels.csv"),
        str(folder / "val.csv"),
        str(folder / "test.csv"),
        test_images=str(folder / "test"),
        image_size=8,
        color=color,  # type: ignore[arg-type]
    )


def _with_warnings(load) -> tuple[ImageData, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load()
    return data, sorted(str(warning.message) for warning in caught if warning.category is UserWarning)


def _assert_same(stored: ImageData, in_memory: ImageData) -> None:
    for split in ("train", "val", "test"):
        assert getattr(stored, split).images.shape == getattr(in_memory, split).images.shape
        assert torch.equal(getattr(stored, split).images, getattr(in_memory, split).images)
        assert torch.equal(getattr(stored, split).targets, getattr(in_memory, split).targets)
        assert getattr(stored, f"{split}_files") == getattr(in_memory, f"{split}_files")
    assert (stored.task, stored.class_names) == (in_memory.task, in_memory.class_names)


@pytest.mark.parametrize(
    ("color_images", "color", "channels", "converted"),
    [
        (2, "auto", 1, "3 of 13 images are color"),  # gray majority: the JPEGs made gray (chunks of the staging)
        (12, "auto", 3, "10 of 23 images are grayscale"),  # color majority: the gray ones repeated
        (2, "grayscale", 1, None),
        (2, "rgb", 3, None),
    ],
)
def test_a_streamed_folder_equals_the_folder_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, color_images: int, color: str, channels: int, converted: str | None
) -> None:
    monkeypatch.setattr(image_store, "CHUNK_ROWS", 4)  # several chunks per split
    _lab(tmp_path, color_images)
    source = _source(tmp_path, color)
    in_memory, memory_warnings = _with_warnings(source.load)
    stored, store_warnings = _with_warnings(
        lambda: load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    )
    assert stored.train.images.shape[1] == channels and (tmp_path / "store" / "train_images.npy").is_file()
    _assert_same(stored, in_memory)
    assert stored.train_files[:3] == ("a.png", "color/c0.jpg", "color/c1.jpg")
    assert "sub dir/ü 1.png" in stored.train_files
    assert store_warnings == memory_warnings  # the stretched image, and the majority's conversion
    assert any(m.startswith("1 of ") and "wide scan.png (16 x 9)" in m for m in store_warnings)
    assert (converted is None) == (
        not any("were made grayscale" in m or "converted to RGB" in m for m in store_warnings)
    )
    if converted is not None:
        assert any(m.startswith(converted) for m in store_warnings)
    assert not list((tmp_path / "store").glob("*_staged.npy"))  # the staging arrays are gone

    # A later run opens the store: not one image file decoded, no warning repeated.
    monkeypatch.setattr(folder_module, "_read_image", lambda *args: pytest.fail("an image was read again"))
    again, again_warnings = _with_warnings(
        lambda: load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    )
    _assert_same(again, in_memory)
    assert again_warnings == []


@pytest.mark.parametrize("color", ["auto", "rgb"])  # staged, then written; or written straight away
def test_unreadable_files_are_listed_at_the_end_and_read_again_once_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, color: str
) -> None:
    monkeypatch.setattr(image_store, "CHUNK_ROWS", 4)
    _lab(tmp_path, 2)
    source = _source(tmp_path, color)
    broken = [tmp_path / "images" / "x" / "broken 1.png", tmp_path / "images" / "z.jpg"]
    for path in broken:
        path.write_bytes(b"not an image")
    with pytest.raises(ValueError) as in_memory_error:
        source.load()
    read_paths: list[str] = []
    reader = folder_module._read_image
    monkeypatch.setattr(
        folder_module, "_read_image", lambda path, size: read_paths.append(path.name) or reader(path, size)
    )
    with pytest.raises(ValueError) as store_error:
        load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    assert str(store_error.value) == str(in_memory_error.value)  # the same one error, every file listed
    assert str(store_error.value).startswith("2 images are not readable (")
    assert len(read_paths) == 15  # every image was read: all unreadable ones are found in one pass
    plan = source.plan_rows()[0]
    assert not ImageStore(tmp_path / "store", source_fingerprint(source, plan)).complete

    # Fixed in place: the next build reads just those two (then converts), and the store equals memory.
    for path in broken:
        _gray_png(path, 200)
    read_paths.clear()
    stored = load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    assert sorted(read_paths) == ["broken 1.png", "z.jpg"]
    _assert_same(stored, source.load())

    # Removed instead: the listing changed, so an unfinished store of the old listing is started again.
    other = tmp_path / "other"
    _lab(other, 2)
    source = _source(other, color)
    (other / "images" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"1 image is not readable \(.*bad.png; each listed below\)"):
        load_through_store(source, other / "store", memory_cap_gb=0, progress=False)
    (other / "images" / "bad.png").unlink()
    _assert_same(load_through_store(source, other / "store", memory_cap_gb=0, progress=False), source.load())


@pytest.mark.parametrize("killed_in", ["reading", "converting"])
def test_a_killed_build_resumes_where_its_last_chunk_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_in: str
) -> None:
    monkeypatch.setattr(image_store, "CHUNK_ROWS", 4)
    source = _lab(tmp_path, 2)  # gray majority: read as RGB, then converted to one channel
    in_memory = source.load()
    plan, read = source.plan_rows()
    store = ImageStore(tmp_path / "store", source_fingerprint(source, plan))
    calls = {"read": 0, "gray": 0, "killed": 0}

    def killed_read(split: str, row: int) -> np.ndarray:
        calls["read"] += 1
        if killed_in == "reading" and (split, row) == ("train", 8) and not calls["killed"]:
            calls["killed"] = 1
            raise KeyboardInterrupt  # as a kill would: two chunks of the pool are on disk and recorded
        return read(split, row)

    to_gray = plan.staging.to_gray

    def killed_to_gray(row: np.ndarray) -> np.ndarray:
        calls["gray"] += 1
        if killed_in == "converting" and calls["gray"] == 6 and not calls["killed"]:
            calls["killed"] = 1
            raise KeyboardInterrupt  # one chunk of the pool converted and recorded
        return to_gray(row)

    plan = dataclasses.replace(plan, staging=dataclasses.replace(plan.staging, to_gray=killed_to_gray))
    with pytest.raises(KeyboardInterrupt):
        store.build(plan, killed_read, progress=False)
    assert not store.complete
    calls["read"] = calls["gray"] = 0
    store.build(plan, killed_read, progress=False)
    assert store.complete
    rows = len(in_memory.train) + len(in_memory.val) + len(in_memory.test)
    if killed_in == "reading":
        assert calls["read"] == rows - 8 and calls["gray"] == rows  # from the third chunk of the pool on
    else:
        assert calls["read"] == 0 and calls["gray"] == rows - 4  # converting from the second chunk on
    _assert_same(store.open(), in_memory)


@pytest.mark.slow
def test_streaming_a_folder_does_not_take_the_pool_into_process_memory(tmp_path: Path) -> None:
    """Private (anonymous) memory while a folder of 2,000 color images (24 MB of pixels at 64 px) is streamed into
    the store and then passed over in batches stays far below the pool; read into memory, it holds the pool."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2_000):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
            images / f"{i:04d}.png", compress_level=1
        )
    (tmp_path / "val.csv").write_text("file,label\n0000.png,a\n0001.png,b\n")
    script = textwrap.dedent("""
        import torch
        from alvae_pl.data.image_store import load_through_store
        from alvae_pl.data.sources import FolderSource

        def private_mb():
            fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
            return int(fields["RssAnon"].split()[0]) / 1024

        before, total = private_mb(), 0.0
        source = FolderSource(IMAGES, None, VAL, image_size=64)
        data = load_through_store(source, FOLDER, memory_cap_gb=CAP, progress=False)
        for rows in torch.arange(len(data.train)).split(128):
            total += data.train.images[rows].float().mean().item()
        print(private_mb() - before, total, tuple(data.train.images.shape))
    """)
    grown_mb, totals = {}, {}
    for mode, folder, cap in (("store", tmp_path / "store", 0), ("memory", tmp_path / "unused", 1)):
        code = script.replace("FOLDER", repr(str(folder))).replace("CAP", str(cap))
        code = code.replace("IMAGES", repr(str(images))).replace("VAL", repr(str(tmp_path / "val.csv")))
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPOSITORY)
        assert run.returncode == 0, run.stderr[-2000:]
        grown, totals[mode], shape = run.stdout.split(maxsplit=2)
        grown_mb[mode] = float(grown)
        assert shape.strip() == "(1998, 3, 64, 64)"
    assert totals["store"] == totals["memory"]  # the same pixels both ways
    # The pool is 24 MB; a batch 1.5 MB as uint8, 6 MB as float. In memory, the process holds the pool (the control).
    assert grown_mb["store"] < 12 and grown_mb["memory"] > 22, grown_mb


def test_a_lab_run_through_the_store_equals_one_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/lab_digits.yaml with every label known (the simulation), once in memory and once streamed from the
    folder into the store: the same picks, scores, labels and history."""
    monkeypatch.chdir(REPOSITORY)
    lab = write_digits_folder(tmp_path / "lab", initial_labels=30)
    source = "--data.source.init_args."

    def run(logs: Path, *extra: str) -> Path:
        main([
            "fit", "--config", "configs/lab_digits.yaml", *TINY,
            f"{source}images={lab / 'images'}", f"{source}labels={lab / 'answer_key.csv'}",
            f"{source}val_labels={lab / 'val.csv'}", f"{source}val_images={lab / 'val'}",
            f"{source}test_labels={lab / 'test.csv'}", f"{source}test_images={lab / 'test'}",
            f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", "--active.max_labels=90", "--active.epochs_first=1",
            "--active.epochs_increment=0", "--data.initial_labels=30",
            "--active.oracle=alvae_pl.oracles.SimulatedOracle", "--ckpt_path=null", *extra,
        ])  # fmt: skip
        return logs / "lab_digits" / "run"

    memory = run(tmp_path / "memory")
    store = tmp_path / "store"
    stored = run(tmp_path / "stored", f"--data.image_store={store}", "--data.memory_cap_gb=0")
    assert (store / "train_images.npy").is_file() and (store / "train_files.json").is_file()
    assert read_csv(stored / "labeled.csv") == read_csv(memory / "labeled.csv")
    assert without_timings(read_csv(stored / "history.csv")) == without_timings(read_csv(memory / "history.csv"))
    assert [row["labels"] for row in read_csv(stored / "history.csv")] == ["30", "60", "90"]


def test_an_edited_labels_file_reuses_the_store_with_the_new_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More labels (or a corrected one) in the lab's labels file: the next run reads its targets from the file and
    the pixels from the store, decoding no image again; a renamed file still rebuilds (its pixels may differ)."""
    _lab(tmp_path, color_images=2)
    source = _source(tmp_path, "grayscale")
    load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    written = (tmp_path / "store" / "train_images.npy").stat().st_mtime_ns
    (tmp_path / "labels.csv").write_text("file,label\na.png,dog\nsub dir/ü 2.png,dog\nx/b.png,cat\n")
    in_memory = source.load()
    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "_read_image", lambda *args: pytest.fail("an image was read again"))
        stored = load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
    _assert_same(stored, in_memory)
    names, targets = stored.train_files, stored.train.targets.tolist()
    labels = {name: target for name, target in zip(names, targets, strict=True) if target >= 0}
    assert labels == {"a.png": 1, "sub dir/ü 2.png": 1, "x/b.png": 0}  # cat 0, dog 1
    assert (tmp_path / "store" / "train_images.npy").stat().st_mtime_ns == written

    (tmp_path / "images" / "x" / "b.png").rename(tmp_path / "images" / "x" / "b2.png")
    (tmp_path / "labels.csv").write_text("file,label\na.png,dog\nsub dir/ü 2.png,dog\n")
    with pytest.raises(ValueError, match="built from other source settings"):
        load_through_store(source, tmp_path / "store", memory_cap_gb=0, progress=False)
