"""Data sources: what each gives back, and the one-line errors for what can go wrong with the files."""

from __future__ import annotations

import struct
import urllib.error
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from medmnist import INFO

from alvae_pl.data.sources import DigitsSource, ImageSource, MedMNISTSource, MNISTSource, NpzSource


def _info_names(flag: str) -> tuple[str, ...]:
    labels = INFO[flag]["label"]
    return tuple(labels[str(index)] for index in range(len(labels)))


def _assert_one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --- MedMNISTSource -------------------------------------------------------------------------------------------


def test_medmnist_chest_is_multilabel_with_info_names_and_file_values(chest_npz: Path) -> None:
    data = MedMNISTSource("chestmnist", root=str(chest_npz.parent)).load()
    raw = np.load(chest_npz)

    assert data.task == "multilabel"
    assert data.class_names == _info_names("chestmnist")
    assert data.num_classes == 14 and data.num_channels == 1 and data.image_size == 28
    for split, count in (("train", 60), ("val", 20), ("test", 20)):
        part = getattr(data, split)
        assert part.images.shape == (count, 1, 28, 28) and part.images.dtype == torch.uint8
        assert part.targets.shape == (count, 14) and part.targets.dtype == torch.int64
        assert torch.equal(part.images[:, 0], torch.from_numpy(raw[f"{split}_images"]))
        assert torch.equal(part.targets, torch.from_numpy(raw[f"{split}_labels"]).long())


def test_medmnist_rgb_is_channels_first_and_multiclass(multiclass_npz: Path) -> None:
    data = MedMNISTSource("pathmnist", root=str(multiclass_npz.parent)).load()
    raw = np.load(multiclass_npz)

    assert data.task == "multiclass"
    assert data.class_names == _info_names("pathmnist") and data.num_classes == 9
    assert data.train.images.shape == (60, 3, 28, 28)
    # Pixel (h, w) of channel c in the file is pixel [c, h, w] of the tensor.
    assert torch.equal(data.train.images, torch.from_numpy(raw["train_images"]).permute(0, 3, 1, 2))
    assert data.test.targets.shape == (20,) and data.test.targets.dtype == torch.int64
    assert torch.equal(data.test.targets, torch.from_numpy(raw["test_labels"][:, 0]).long())


def test_medmnist_binary_flag_gives_two_classes(make_medmnist_npz) -> None:
    path = make_medmnist_npz("pneumoniamnist.npz", num_classes=2)
    data = MedMNISTSource("pneumoniamnist", root=str(path.parent)).load()

    assert data.task == "multiclass" and data.class_names == _info_names("pneumoniamnist")
    assert set(data.train.targets.tolist()) == {0, 1}


def test_medmnist_plus_size_reads_its_own_file_name(make_medmnist_npz) -> None:
    path = make_medmnist_npz("chestmnist_64.npz", image_size=64, num_classes=14, multilabel=True, sizes=(6, 3, 3))
    source = MedMNISTSource("chestmnist", size=64, root=str(path.parent))

    assert source.path == path
    assert source.url == INFO["chestmnist"]["url_64"] and source.md5 == INFO["chestmnist"]["MD5_64"]
    assert source.load().train.images.shape == (6, 1, 64, 64)


def test_medmnist_file_of_other_size_under_the_name_is_rejected(make_medmnist_npz) -> None:
    path = make_medmnist_npz("pathmnist_64.npz", channels=3, sizes=(10, 9, 9))  # 28 px saved as 64
    with pytest.raises(ValueError, match="28 px images but pathmnist at 64 px") as error:
        MedMNISTSource("pathmnist", size=64, root=str(path.parent)).load()
    _assert_one_line(error)


def test_medmnist_missing_file_says_where_and_how(tmp_path: Path) -> None:
    source = MedMNISTSource("dermamnist", size=128, root=str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        source.load()

    message = _assert_one_line(error)
    assert str(tmp_path / "dermamnist_128.npz") in message
    assert INFO["dermamnist"]["url_128"] in message
    assert "--data.source.init_args.download true" in message


def test_medmnist_root_expands_home(chest_npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(chest_npz.parent.parent))
    data = MedMNISTSource("chestmnist", root=f"~/{chest_npz.parent.name}").load()
    assert len(data.train) == 60


def test_medmnist_download_fetches_the_size_url_with_its_md5(
    chest_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_download_url(url: str, root: str, filename: str, md5: str) -> None:
        calls.append((url, root, filename, md5))
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision's download_url does
        (Path(root) / filename).write_bytes(chest_npz.read_bytes())

    monkeypatch.setattr("torchvision.datasets.utils.download_url", fake_download_url)
    root = tmp_path / "downloads"
    # The fixture is 28 px, so read it back as the 28 px set; the 64 px call is checked without reading.
    data = MedMNISTSource("chestmnist", root=str(root), download=True).load()
    with pytest.raises(ValueError):
        MedMNISTSource("chestmnist", size=64, root=str(root), download=True).load()

    assert calls == [
        (INFO["chestmnist"]["url"], str(root), "chestmnist.npz", INFO["chestmnist"]["MD5"]),
        (INFO["chestmnist"]["url_64"], str(root), "chestmnist_64.npz", INFO["chestmnist"]["MD5_64"]),
    ]
    assert len(data.train) == 60
    # A file already there is not fetched again.
    MedMNISTSource("chestmnist", root=str(root), download=True).load()
    assert len(calls) == 2


def test_medmnist_failed_download_is_one_line_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, root: str, filename: str, md5: str) -> None:
        (Path(root) / filename).write_bytes(b"partial")
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(OSError, match="download the file by hand") as error:
        MedMNISTSource("bloodmnist", root=str(tmp_path), download=True).load()

    assert INFO["bloodmnist"]["url"] in _assert_one_line(error)
    assert not (tmp_path / "bloodmnist.npz").exists()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"flag": "organmnist3d"}, "3D MedMNIST flag.*choose one of pathmnist, chestmnist"),
        ({"flag": "cifar10"}, "not a MedMNIST flag.*organsmnist"),
        ({"flag": "pathmnist", "size": 32}, "choose one of 28, 64, 128, 224"),
    ],
)
def test_medmnist_rejects_unknown_flags_and_sizes(kwargs: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as error:
        MedMNISTSource(**kwargs)
    _assert_one_line(error)


# --- broken files (the shared npz reader) ---------------------------------------------------------------------


def _write_split_arrays(path: Path, **overrides: np.ndarray | None) -> Path:
    """A valid 5/3/2 grayscale multi-class file, with some arrays replaced (``None``: left out)."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray | None] = {}
    for split, count in (("train", 5), ("val", 3), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(count, dtype=np.uint8)[:, None] % 2
    arrays.update(overrides)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def test_corrupt_file_is_a_one_line_value_error(chest_npz: Path) -> None:
    chest_npz.write_bytes(b"<html>503 Service Unavailable</html>")  # what a failed download may leave
    with pytest.raises(ValueError, match="is not a readable .npz file") as error:
        MedMNISTSource("chestmnist", root=str(chest_npz.parent)).load()
    assert str(chest_npz) in _assert_one_line(error)
    assert "pickle" not in str(error.value)  # numpy's message for a non-zip file says nothing useful


def test_truncated_file_is_a_one_line_value_error(chest_npz: Path) -> None:
    content = chest_npz.read_bytes()
    chest_npz.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="is not a readable .npz file") as error:
        NpzSource(str(chest_npz)).load()
    assert str(chest_npz) in _assert_one_line(error)


def test_damaged_array_inside_the_archive_is_a_one_line_value_error(chest_npz: Path) -> None:
    content = bytearray(chest_npz.read_bytes())
    content[200:2000] = bytes(byte ^ 0x5A for byte in content[200:2000])  # inside the first member's data
    chest_npz.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="is unreadable") as error:
        NpzSource(str(chest_npz)).load()
    assert str(chest_npz) in _assert_one_line(error)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"val_labels": None}, "misses key\\(s\\) val_labels"),
        ({"test_labels": np.zeros((7, 1), np.uint8)}, "test_images has 2 images but test_labels has 7 labels"),
        ({"train_images": np.zeros((5, 3, 8, 8), np.uint8)}, "channels last"),
        ({"train_images": np.zeros((5, 8, 9), np.uint8)}, "8 x 9; crop or resize them square"),
        ({"val_images": np.zeros((3, 16, 16), np.uint8)}, "differ in \\[C, H, W\\]"),
        ({"train_images": np.zeros((5, 8, 8), np.float32)}, "float32; images must be uint8"),
        ({"train_labels": np.full((5, 1), 0.5)}, "non-integer"),
        ({"test_labels": np.full((2, 1), -1)}, "labels contain -1"),
        ({"train_images": np.zeros((0, 8, 8), np.uint8), "train_labels": np.zeros((0, 1), np.uint8)}, "empty"),
    ],
)
def test_malformed_arrays_are_one_line_value_errors(tmp_path: Path, overrides: dict, expected: str) -> None:
    path = _write_split_arrays(tmp_path / "bad.npz", **overrides)
    with pytest.raises(ValueError, match=expected) as error:
        NpzSource(str(path)).load()
    assert str(path) in _assert_one_line(error)


def test_labels_that_do_not_fit_the_flag_are_rejected(make_medmnist_npz) -> None:
    single_column = make_medmnist_npz("chestmnist.npz", num_classes=2)  # (N, 1) labels under a multi-label name
    with pytest.raises(ValueError, match="1 findings per image but there are 14 names"):
        MedMNISTSource("chestmnist", root=str(single_column.parent)).load()

    too_many = make_medmnist_npz("octmnist.npz", num_classes=9)  # labels up to 8, OCTMNIST has 4 classes
    with pytest.raises(ValueError, match="labels go up to 8 but there are only 4 class names"):
        MedMNISTSource("octmnist", root=str(too_many.parent)).load()


# --- NpzSource ------------------------------------------------------------------------------------------------


def test_npz_auto_detects_multilabel_findings(chest_npz: Path) -> None:
    data = NpzSource(str(chest_npz)).load()
    assert data.task == "multilabel"
    assert data.class_names == tuple(str(index) for index in range(14))
    assert data.train.targets.shape == (60, 14)


def test_npz_auto_detects_multiclass_from_flat_labels(tmp_path: Path) -> None:
    labels = {f"{split}_labels": np.array([0, 3, 1, 3, 0][:count]) for split, count in (("train", 5), ("val", 3))}
    path = _write_split_arrays(tmp_path / "mine.npz", **labels, test_labels=np.array([2, 1]))
    data = NpzSource(str(path)).load()

    assert data.task == "multiclass"
    assert data.class_names == ("0", "1", "2", "3")  # max label + 1
    assert data.train.targets.tolist() == [0, 3, 1, 3, 0] and data.train.targets.dtype == torch.int64


def test_npz_uses_given_names_and_checks_them_against_the_labels(multiclass_npz: Path) -> None:
    names = [f"tissue {index}" for index in range(12)]  # more names than labels used: allowed
    data = NpzSource(str(multiclass_npz), task="multiclass", class_names=names).load()
    assert data.class_names == tuple(names)

    with pytest.raises(ValueError, match="labels go up to 8 but there are only 3 class names"):
        NpzSource(str(multiclass_npz), class_names=["a", "b", "c"]).load()
    with pytest.raises(ValueError, match="values other than 0/1 but the task is multi-label"):
        NpzSource(str(multiclass_npz), task="multilabel").load()


def test_npz_multi_column_labels_that_are_not_zero_one_are_rejected(tmp_path: Path) -> None:
    path = _write_split_arrays(
        tmp_path / "scores.npz",
        train_labels=np.full((5, 3), 2),
        val_labels=np.zeros((3, 3)),
        test_labels=np.zeros((2, 3)),
    )
    with pytest.raises(ValueError, match="values other than 0/1"):
        NpzSource(str(path)).load()
    with pytest.raises(ValueError, match="labels are \\(N, 3\\) but the task is multi-class"):
        NpzSource(str(path), task="multiclass").load()


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="train_images, train_labels") as error:
        NpzSource(str(tmp_path / "nowhere.npz")).load()
    assert str(tmp_path / "nowhere.npz") in _assert_one_line(error)


# --- DigitsSource ---------------------------------------------------------------------------------------------


def test_digits_split_is_complete_stratified_and_deterministic() -> None:
    data = DigitsSource().load()
    sizes = [len(data.train), len(data.val), len(data.test)]

    assert sum(sizes) == 1797 and sizes == [1257, 270, 270]
    assert data.task == "multiclass" and data.class_names == tuple("0123456789")
    all_targets = torch.cat([data.train.targets, data.val.targets, data.test.targets])
    assert torch.bincount(all_targets).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    for split in (data.val, data.test):  # ~27 of each digit, stratified within one image
        counts = torch.bincount(split.targets, minlength=10)
        assert int(counts.min()) >= 26 and int(counts.max()) <= 29

    again = DigitsSource().load()
    assert torch.equal(again.val.images, data.val.images) and torch.equal(again.test.targets, data.test.targets)
    other = DigitsSource(split_seed=1).load()
    assert not torch.equal(other.val.images, data.val.images)


def test_digits_pixels_span_uint8_and_resize_to_image_size() -> None:
    from sklearn.datasets import load_digits

    data = DigitsSource(image_size=32).load()
    assert data.train.images.shape[1:] == (1, 32, 32) and data.train.images.dtype == torch.uint8
    assert int(data.train.images.min()) == 0 and int(data.train.images.max()) == 255

    native = DigitsSource(image_size=8).load()  # no resize: exactly the 0..16 values scaled to 0..255
    scaled = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    stored = np.concatenate([split.images[:, 0].numpy() for split in (native.train, native.val, native.test)])
    assert sorted(map(bytes, stored)) == sorted(map(bytes, scaled))


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 0.0}, {"test_fraction": 1.0}, {"val_fraction": 0.5, "test_fraction": 0.5}]
)
def test_digits_rejects_fractions_that_leave_an_empty_split(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="sum below 1"):
        DigitsSource(**kwargs)


# --- MNISTSource ----------------------------------------------------------------------------------------------


def _write_mnist(root: Path, train_count: int = 50, test_count: int = 10) -> dict[str, np.ndarray]:
    """Writes the four uncompressed idx files torchvision reads from ``root/MNIST/raw``."""
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, count in (("train", train_count), ("t10k", test_count)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count) + labels.tobytes())
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
    return arrays


def test_mnist_reads_idx_files_and_splits_validation_from_train(tmp_path: Path) -> None:
    written = _write_mnist(tmp_path)
    data = MNISTSource(root=str(tmp_path), val_size=10).load()

    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 10)
    assert data.train.images.shape == (40, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.task == "multiclass" and data.class_names == tuple("0123456789")
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(written["t10k_images"]))
    assert torch.equal(data.test.targets, torch.from_numpy(written["t10k_labels"]).long())
    # Train and val together are exactly the official training images, each once.
    rows = {bytes(image.numpy()) for image in torch.cat([data.train.images, data.val.images])[:, 0]}
    assert rows == {bytes(image) for image in written["train_images"]}

    assert torch.equal(MNISTSource(root=str(tmp_path), val_size=10).load().val.images, data.val.images)
    reseeded = MNISTSource(root=str(tmp_path), val_size=10, split_seed=1).load()
    assert not torch.equal(reseeded.val.images, data.val.images)


def test_mnist_missing_files_say_where_torchvision_looks(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        MNISTSource(root=str(tmp_path)).load()
    message = _assert_one_line(error)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "--data.source.init_args.download true" in message


def test_mnist_failed_download_leaves_no_empty_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", offline)
    with pytest.raises(OSError, match="downloading MNIST .* failed") as error:
        MNISTSource(root=str(tmp_path / "data"), download=True).load()
    _assert_one_line(error)
    assert not (tmp_path / "data").exists()  # nothing written: no empty data/MNIST/raw/ left behind


def test_mnist_val_size_too_large_and_corrupt_files(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    with pytest.raises(ValueError, match="val_size=50 but MNIST's training set has 50 images"):
        MNISTSource(root=str(tmp_path), val_size=50).load()

    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x07garbage")
    with pytest.raises(ValueError, match="unreadable") as error:
        MNISTSource(root=str(tmp_path), val_size=10).load()
    _assert_one_line(error)


# --- configuration --------------------------------------------------------------------------------------------


def test_sources_build_from_class_path_yaml(chest_npz: Path) -> None:
    parser = ArgumentParser()
    parser.add_argument("--source", type=ImageSource)
    config = parser.parse_string(
        f"source:\n  class_path: alvae_pl.data.sources.MedMNISTSource\n"
        f"  init_args: {{flag: chestmnist, root: {chest_npz.parent}}}\n"
    )
    source = parser.instantiate(config).source

    assert isinstance(source, MedMNISTSource) and source.size == 28
    assert source.load().class_names == _info_names("chestmnist")
    npz = parser.instantiate(
        parser.parse_string(
            f"source:\n  class_path: alvae_pl.data.sources.NpzSource\n"
            f"  init_args: {{path: {chest_npz}, task: multilabel}}\n"
        )
    ).source
    assert isinstance(npz, NpzSource) and npz.load().task == "multilabel"


def test_long_tailed_digits_follow_the_exponential_profile_and_keep_val_and_test() -> None:
    balanced = DigitsSource().load()
    long_tailed = DigitsSource(imbalance_ratio=10).load()
    counts = torch.bincount(long_tailed.train.targets, minlength=10).tolist()
    smallest = int(torch.bincount(balanced.train.targets).min())
    # The long-tail literature's profile, written out: n_c = floor(n_max * ratio^(-c / 9)).
    assert counts == [max(1, int(np.floor(smallest * 10 ** (-c / 9)))) for c in range(10)]
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.05)
    # A subset of the balanced train split (no image from validation or test), which stay as they were.
    train_rows = {bytes(image.numpy()) for image in balanced.train.images}
    assert all(bytes(image.numpy()) in train_rows for image in long_tailed.train.images)
    assert torch.equal(long_tailed.val.images, balanced.val.images)
    assert torch.equal(long_tailed.test.targets, balanced.test.targets)
    # Seeded: the same images again; another split seed, other images.
    assert torch.equal(DigitsSource(imbalance_ratio=10).load().train.images, long_tailed.train.images)
    other = DigitsSource(imbalance_ratio=10, split_seed=1).load()
    assert torch.bincount(other.train.targets, minlength=10).tolist()[-1] >= 1
    with pytest.raises(ValueError, match="imbalance_ratio=0.5"):
        DigitsSource(imbalance_ratio=0.5)
