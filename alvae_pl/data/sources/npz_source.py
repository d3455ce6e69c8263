"""A user's own images, saved as an ``.npz`` in MedMNIST key layout."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from alvae_pl.data.image_data import ImageData
from alvae_pl.data.sources.base import NPZ_KEYS, ImageSource, read_medmnist_npz


class NpzSource(ImageSource):
    """Reads ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
    ``test_labels`` from one ``.npz`` file.

    Images are uint8 ``N x H x W`` or ``N x H x W x 3`` (square, channels last); labels ``(N,)`` or ``(N, 1)``
    class indices, or ``(N, K)`` 0/1 findings. Save such a file with
    ``np.savez_compressed(path, train_images=..., train_labels=..., ...)``.

    Args:
        path: the ``.npz`` file (``~`` is expanded).
        task: ``"auto"`` reads ``(N,)``/``(N, 1)`` labels as multi-class (``max + 1`` classes) and ``(N, K)``
            0/1 labels, ``K > 1``, as multi-label; or name the task to have the file checked against it.
        class_names: one name per class or finding; ``None`` gives ``"0"``, ``"1"``, ...

    Example YAML::

        source:
          class_path: alvae_pl.data.sources.NpzSource
          init_args: {path: /data/my_scans.npz, task: multilabel, class_names: [effusion, mass]}
    """

    def __init__(
        self,
        path: str,
        task: Literal["auto", "multiclass", "multilabel"] = "auto",
        class_names: list[str] | None = None,
    ):
        if task not in ("auto", "multiclass", "multilabel"):
            raise ValueError(f"task={task!r}; choose one of 'auto', 'multiclass', 'multilabel'")
        self.path = path
        self.task = task
        self.class_names = class_names

    def load(self) -> ImageData:
        """Reads and checks the file.

        Returns:
            Images uint8 ``[N, C, H, W]``, targets int64 ``[N]`` or ``[N, K]``, the task and class names.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: the file is unreadable or its arrays do not fit the layout or the task.
        """
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: NpzSource needs an .npz file with keys {', '.join(NPZ_KEYS)}; check its path"
            )
        return read_medmnist_npz(path, task=self.task, class_names=self.class_names)
