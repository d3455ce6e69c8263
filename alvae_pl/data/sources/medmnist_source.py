"""The 2D MedMNIST data sets (v2 at 28 px, MedMNIST+ at 64, 128 and 224 px), read from their ``.npz`` files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import medmnist
from medmnist import INFO

from alvae_pl.data.image_data import ImageData, TaskKind
from alvae_pl.data.sources.base import ImageSource, one_line_reason, read_medmnist_npz

# Every task string of medmnist.INFO; only ChestMNIST is multi-label. Binary and ordinal sets are trained as
# multi-class with 2 or 5 classes, as MedMNIST's own evaluator does.
_TASKS: dict[str, TaskKind] = {
    "multi-label, binary-class": "multilabel",
    "multi-class": "multiclass",
    "binary-class": "multiclass",
    "ordinal-regression": "multiclass",
}


def _is_2d(flag: str) -> bool:
    dataset_class = getattr(medmnist, INFO[flag].get("python_class", ""), None)
    if dataset_class is not None:
        return issubclass(dataset_class, medmnist.dataset.MedMNIST2D)
    return not flag.endswith("3d")


FLAGS_2D: tuple[str, ...] = tuple(flag for flag in INFO if _is_2d(flag))


def available_sizes(flag: str) -> tuple[int, ...]:
    """Image sizes a MedMNIST flag is published in: 28 (``url``) plus every ``url_<size>`` of its INFO."""
    info: dict[str, Any] = INFO[flag]
    extra = sorted(int(key.removeprefix("url_")) for key in info if key.startswith("url_"))
    return (28, *extra)


class MedMNISTSource(ImageSource):
    """One 2D MedMNIST data set, read from ``{root}/{flag}.npz`` (28 px) or ``{root}/{flag}_{size}.npz``.

    ChestMNIST gives multi-label targets ``[N, 14]``; every other 2D flag gives class indices ``[N]``
    (binary and ordinal sets included). Class names and download URL come from ``medmnist.INFO``. The arrays
    are read with numpy, not through medmnist's Dataset classes, which assert the official sample counts and
    decode one PIL image per sample.

    Args:
        flag: a 2D MedMNIST flag, e.g. ``"chestmnist"``, ``"pathmnist"``, ``"pneumoniamnist"``.
        size: image side in pixels: 28, or 64, 128, 224 for MedMNIST+.
        root: folder holding the ``.npz`` files (medmnist's own default is ``~/.medmnist``).
        download: fetch the file from Zenodo (MD5-checked) when it is missing; needs internet.

    Example YAML::

        source:
          class_path: alvae_pl.data.sources.MedMNISTSource
          init_args: {flag: chestmnist, size: 28, root: ~/.medmnist, download: false}
    """

    def __init__(self, flag: str = "chestmnist", size: int = 28, root: str = "~/.medmnist", download: bool = False):
        if flag not in FLAGS_2D:
            kind = "a 3D MedMNIST flag, not supported" if flag in INFO else "not a MedMNIST flag"
            raise ValueError(f"flag={flag!r} is {kind}; choose one of {', '.join(FLAGS_2D)}")
        sizes = available_sizes(flag)
        if size not in sizes:
            raise ValueError(f"size={size} is not published for {flag}; choose one of {', '.join(map(str, sizes))}")
        self.flag = flag
        self.size = size
        self.root = root
        self.download = download

    @property
    def filename(self) -> str:
        """``{flag}.npz`` at 28 px, ``{flag}_{size}.npz`` otherwise, as medmnist names its files."""
        return f"{self.flag}.npz" if self.size == 28 else f"{self.flag}_{self.size}.npz"

    @property
    def path(self) -> Path:
        """Where the ``.npz`` file is expected, with ``~`` expanded."""
        return Path(self.root).expanduser() / self.filename

    @property
    def url(self) -> str:
        return str(INFO[self.flag]["url" if self.size == 28 else f"url_{self.size}"])

    @property
    def md5(self) -> str:
        return str(INFO[self.flag]["MD5" if self.size == 28 else f"MD5_{self.size}"])

    def load(self) -> ImageData:
        """Reads the file (downloading it first if it is missing and ``download`` is set).

        Returns:
            Images uint8 ``[N, C, size, size]`` (``C`` = INFO's ``n_channels``), targets int64 ``[N]`` or
            ``[N, 14]`` (ChestMNIST), the task kind and INFO's class names ordered by label index.

        Raises:
            FileNotFoundError: the file is missing and ``download`` is false.
            OSError: the download failed.
            ValueError: the file is unreadable or does not hold this flag at this size.
        """
        path = self.path
        if not path.is_file():
            if not self.download:
                raise FileNotFoundError(
                    f"{path} not found (MedMNIST {self.flag} at {self.size} px, {self.url}): pass "
                    f"--data.source.init_args.download true (needs internet) or put the file there"
                )
            self._download(path)

        info: dict[str, Any] = INFO[self.flag]
        names = tuple(info["label"][key] for key in sorted(info["label"], key=int))
        data = read_medmnist_npz(path, task=_TASKS[info["task"]], class_names=names)
        channels, height = data.num_channels, int(data.train.images.shape[-2])
        if channels != info["n_channels"] or height != self.size:
            raise ValueError(
                f"{path} holds {channels}-channel {height} px images but {self.flag} at {self.size} px has "
                f"{info['n_channels']}-channel {self.size} px images: wrong file under this name?"
            )
        return data

    def _download(self, path: Path) -> None:
        # Imported here: torchvision's download helpers are only needed on this path.
        from torchvision.datasets.utils import download_url

        try:
            download_url(self.url, root=str(path.parent), filename=path.name, md5=self.md5)
        except (OSError, RuntimeError) as error:  # OSError: no connection; RuntimeError: MD5 mismatch
            # The file did not exist before this call, so whatever is there now is a partial or corrupt download.
            path.unlink(missing_ok=True)
            raise OSError(
                f"downloading {self.url} to {path} failed ({one_line_reason(error)}); check the internet "
                f"connection, or download the file by hand (MD5 {self.md5}) and put it there"
            ) from None
        if not path.is_file():
            raise OSError(f"downloading {self.url} did not produce {path}; download it by hand and put it there")
