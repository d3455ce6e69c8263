"""Task-agnostic features from a pretrained image model (torchvision, or timm where installed), as EncoderFeatures.

For users who have a pretrained encoder and no wish to train one on their pool. Nothing is trained: the model's
penultimate embedding of each image is computed once per run and kept in memory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alvae_pl.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from alvae_pl.models.encoder_features import EncoderFeatures

Library = Literal["torchvision", "timm"]

#: The attributes that hold a torchvision classifier's last stage; replaced by an identity to expose the embedding.
_CLASSIFIER_ATTRIBUTES = ("fc", "heads", "classifier", "head")
#: Input size when the weights do not say one (random weights): torchvision's ImageNet models' 224 px.
DEFAULT_INPUT_SIZE = 224


def torchvision_weights_path(url: str) -> str:
    """Where torchvision looks for (and caches) the weights file at ``url``: ``$TORCH_HOME/hub/checkpoints/``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


class PretrainedFeatures(EncoderFeatures):
    """V(u) = a pretrained model's embedding (its output with the classification head removed).

    Images are resized to the model's input size (bilinear, antialiased), grayscale repeated to 3 channels,
    normalised with the weights' statistics (ImageNet's), and embedded under inference mode in batches of
    ``batch_size``. The features of an image never change during a run, so each one is computed once and kept in
    memory: the loss-prediction head, which reads V(u) at every training step, then costs no encoder pass after the
    first epoch. The cache is keyed by the image's content (a 128-bit digest of its bytes) rather than by its pool
    index, because the consumers of eq. 6 are handed images, not indices; within a run the two are equivalent.

    The network is deliberately not a registered submodule: it would otherwise be saved in every task checkpoint
    (330 MB for ViT-B/16) and wrapped by DDP, while it is rebuilt from ``model`` and ``weights`` at any time.

    Args:
        model: a torchvision model name (``resnet18``, ``resnet50``, ``vit_b_16``, ``efficientnet_b0``, ...) or, with
            ``library: timm``, a timm model name.
        weights: torchvision: a member of the model's weights enum (``IMAGENET1K_V1``, ``IMAGENET1K_V2``,
            ``DEFAULT``); timm: any value loads the pretrained weights; ``null``: random weights (for tests).
            Offline, weights not cached give a one-line error naming the file and where to put it.
        library: ``torchvision`` (the default) or ``timm`` (an optional extra: ``pip install timm``).
        input_size: pixels a side the model sees; default: the weights' own (224 for ImageNet models).
        batch_size: images per forward pass.
        alpha: weight of V(u) beside the task features (eq. 6).
        normalize: for distances: each block divided by its mean norm before weighting (see ``EncoderFeatures``).

    Example YAML::

        features:
          vae:
            class_path: alvae_pl.models.pretrained_features.PretrainedFeatures
            init_args: {model: resnet50, weights: IMAGENET1K_V2, normalize: true}
    """

    def __init__(
        self,
        model: str = "resnet18",
        weights: str | None = "DEFAULT",
        library: Library = "torchvision",
        input_size: int | None = None,
        batch_size: int = 256,
        alpha: float = 1.0,
        normalize: bool = False,
    ) -> None:
        super().__init__(alpha=alpha, normalize=normalize)
        if library not in ("torchvision", "timm"):
            raise ValueError(f"unknown library {library!r}: use torchvision or timm")
        if batch_size < 1 or (input_size is not None and input_size < 16):
            raise ValueError("batch_size must be at least 1 and input_size at least 16 pixels")
        self.model = model
        # A command-line override ``...vae.init_args.weights=null`` reaches here as the string "None" (jsonargparse
        # 4.53 stringifies it inside the union-typed ``vae`` slot); no weights enum has a member of that name.
        self.weights = None if weights in ("None", "null") else weights
        self.library = library
        self.input_size = input_size
        self.batch_size = batch_size
        self._net: nn.Module | None = None  # see the class docstring: kept out of the module tree
        self._dim = 0
        self._cache: dict[bytes, Tensor] = {}  # digest of an image -> float32 [D] on the CPU
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------------------------------------ loading
    def load(
        self,
        num_channels: int,
        image_size: int,
        device: torch.device | str | None = None,
        *,
        num_classes: int | None = None,
        task: str | None = None,
    ) -> PretrainedFeatures:
        """Builds the model and reads its weights (once; later calls only move it). Any image shape works: images
        are resized, and grayscale repeated, to what the model takes."""
        if num_channels not in (1, 3):
            raise ValueError(f"a pretrained image model takes 1- or 3-channel images, got {num_channels} channels")
        if self._net is None:
            net, size, mean, std = self._build_timm() if self.library == "timm" else self._build_torchvision()
            # object.__setattr__: nn.Module's own would register the network as a submodule (see the docstring).
            object.__setattr__(self, "_net", net.eval().requires_grad_(False))
            self.input_size = self.input_size or size
            self.pixel_mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
            self.pixel_std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
            with torch.inference_mode():
                self._dim = int(self._net(torch.zeros(1, 3, self.input_size, self.input_size)).flatten(1).shape[1])
        return self.to(device) if device is not None else self

    def _build_torchvision(self) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...]]:
        from torchvision.models import get_model, get_model_weights

        try:
            enum = get_model_weights(self.model)
        except (ValueError, KeyError):
            known = "see torchvision.models.list_models()"
            raise ValueError(f"unknown torchvision model {self.model!r}: {known}") from None
        weights = None
        if self.weights is not None:
            try:
                weights = enum[self.weights] if self.weights != "DEFAULT" else enum.DEFAULT
            except KeyError:
                names = ", ".join(enum.__members__)  # DEFAULT is one of them
                raise ValueError(f"{self.model} has no weights {self.weights!r}: use one of {names} or null") from None
        try:
            net = get_model(self.model, weights=weights)
        except OSError as error:  # URLError is an OSError: offline and not cached
            assert weights is not None
            raise FileNotFoundError(
                f"{self.model} weights {weights.name} are not at {torchvision_weights_path(weights.url)} and could not "
                f"be downloaded ({error.__class__.__name__}): put {weights.url} there (TORCH_HOME moves the folder) "
                "or set the features' weights: null (random weights)"
            ) from None
        _drop_classifier(net, self.model)
        if weights is None:
            return net, DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD
        preset = weights.transforms()
        return net, int(preset.crop_size[0]), tuple(preset.mean), tuple(preset.std)

    def _build_timm(self) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...]]:
        try:
            import timm
        except ImportError:
            raise ImportError("library: timm needs the timm package: pip install timm") from None
        try:
            # num_classes=0: timm's own way to return the pooled embedding instead of logits.
            net = timm.create_model(self.model, pretrained=self.weights is not None, num_classes=0)
        except OSError as error:  # offline and not in the Hugging Face cache
            raise FileNotFoundError(
                f"timm could not load the weights of {self.model} ({error.__class__.__name__}): download them once "
                "online (they land in the Hugging Face cache, HF_HOME) or set the features' weights: null"
            ) from None
        config = timm.data.resolve_data_config({}, model=net)
        return net, int(config["input_size"][-1]), tuple(config["mean"]), tuple(config["std"])

    def _apply(self, fn: Any, recurse: bool = True) -> PretrainedFeatures:
        # The network is outside the module tree (class docstring), so ``.to(device)`` by an owner (the task model
        # moving to its GPU) must be passed on by hand.
        if self._net is not None:
            self._net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------------------------------------ features
    @property
    def feature_dim(self) -> int:
        if self._net is None:
            raise RuntimeError("PretrainedFeatures.load(num_channels, image_size) must be called first")
        return self._dim

    @property
    def name(self) -> str:
        return f"pretrained {self.model} ({self.weights or 'random weights'})"

    def describe(self) -> dict[str, Any]:
        return {"encoder": "pretrained", "model": self.model, "weights": self.weights, "library": self.library,
                "alpha": self.alpha, "normalize": self.normalize}  # fmt: skip

    def encode(self, images: Tensor) -> Tensor:
        """float ``[B, D]`` of uint8 images ``[B, C, H, W]``: cached rows, and the others embedded now."""
        if self._net is None:
            raise RuntimeError("PretrainedFeatures.load(num_channels, image_size) must be called first")
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images [B, C, H, W], got {images.dtype} {list(images.shape)}")
        keys = image_digests(images)
        missing = [row for row, key in enumerate(keys) if key not in self._cache]
        # Duplicates inside one batch are embedded once.
        first_of = {keys[row]: row for row in reversed(missing)}
        rows = sorted(first_of.values())
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            embedded = self._embed(images[chunk]).cpu()
            for row, vector in zip(chunk, embedded, strict=True):
                self._cache[keys[row]] = vector
        if not keys:
            return torch.zeros(0, self._dim, device=images.device)
        return torch.stack([self._cache[key] for key in keys]).to(images.device)

    def _embed(self, images: Tensor) -> Tensor:
        """The network's embedding, float ``[b, D]``, of uint8 ``[b, C, H, W]``."""
        net = self._net
        assert net is not None and self.input_size is not None
        device = next(net.parameters()).device
        x = images.to(device).float().div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grayscale: the same intensity in each channel the model expects
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        x = (x - self.pixel_mean.to(device)) / self.pixel_std.to(device)
        return net(x).flatten(1).float()

    def clear_cache(self) -> None:
        """Forget the cached features (after changing the network by hand)."""
        self._cache.clear()


def image_digests(images: Tensor) -> list[bytes]:
    """A 128-bit BLAKE2 digest of each uint8 image ``[B, C, H, W]``'s bytes and shape."""
    rows = images.detach().cpu().contiguous().numpy()
    shape = repr(tuple(images.shape[1:])).encode()
    return [hashlib.blake2b(row.tobytes(), digest_size=16, person=b"alvae-img").digest() + shape for row in rows]


def _drop_classifier(net: nn.Module, name: str) -> None:
    """Replace a torchvision model's classification stage with an identity, so that it outputs its embedding."""
    for attribute in _CLASSIFIER_ATTRIBUTES:
        if isinstance(getattr(net, attribute, None), nn.Module):
            setattr(net, attribute, nn.Identity())
            return
    looked = ", ".join(_CLASSIFIER_ATTRIBUTES)
    raise ValueError(f"cannot find the classifier of torchvision's {name} (none of {looked})")
