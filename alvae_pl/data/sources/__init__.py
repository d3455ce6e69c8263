"""Data sources: one loader per origin, each producing an in-memory :class:`~alvae_pl.data.image_data.ImageData`."""

from alvae_pl.data.sources.base import ImageSource, read_medmnist_npz
from alvae_pl.data.sources.digits_source import DigitsSource
from alvae_pl.data.sources.folder_source import FolderSource
from alvae_pl.data.sources.medmnist_source import FLAGS_2D, MedMNISTSource
from alvae_pl.data.sources.mnist_source import MNISTSource
from alvae_pl.data.sources.npz_source import NpzSource
from alvae_pl.data.sources.synthetic_source import SyntheticSource

__all__ = [
    "FLAGS_2D",
    "DigitsSource",
    "FolderSource",
    "ImageSource",
    "MNISTSource",
    "MedMNISTSource",
    "NpzSource",
    "SyntheticSource",
    "read_medmnist_npz",
]
