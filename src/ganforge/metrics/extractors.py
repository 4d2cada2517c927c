"""Feature extractors for evaluation, chosen by the data a run was trained on.

The metrics in this package are functions of (N, D) features; an extractor turns a batch of
samples *in data space* (images (B, C, H, W) in [0, 1], points (B, D)) into features and, where it
is a classifier, class probabilities:

- ``digits``: a small CNN trained by ganforge on scikit-learn's digits (1,348 training images,
  held-out accuracy recorded in the asset's metadata; ``benchmarks/train_digits_classifier.py``
  reproduces it). Features are its 64-d penultimate layer, as Inception's pool3 is for FID
  (Heusel et al. 2017); its softmax gives the Inception Score (Salimans et al. 2016) over the 10
  digit classes and the GAN-test accuracy of conditional models (Shmelkov et al. 2018). Numbers
  measured with it ("digits-FID") are comparable only with each other.
- ``points``: the raw coordinates, for 2-D toy mixtures and other non-image data (the fallback).
- ``inception``: FID Inception-v3 pool3 features (``metrics/inception.py``); needs its weights file.
- ``table``: rows of a table as encoded columns (standardised numbers, one-hot categories), for
  tabular model folders; fitted on the reference table, so it lives in ``metrics/tables.py``
  and works on DataFrames rather than tensors.

Weights ship in the package (``assets/``) or come from a local file: nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import resize_images
from ..errors import GanforgeError
from ..registry import Registry

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DIGITS_WEIGHTS = ASSETS / "digits_classifier.safetensors"
DIGITS_SIZE = 32  # the classifier's input side; any other resolution is resized to it
DIGITS_CLASSES = 10
DIGITS_HELD_OUT_EVERY = 4  # digit i is held out from the classifier's training when i % 4 == 3


# --------------------------------------------------------------------------- digits classifier


class DigitsNet(nn.Module):
    """(N, 1, 32, 32) in [-1, 1] -> (features (N, 64), logits (N, 10)); about 51k parameters.

    Four 3x3 conv + ReLU layers (16, 32, 48, 64 channels), 2x2 max pools between them, global
    average pooling, a 64-unit hidden layer (the features) and a linear classifier.
    """

    def __init__(self, d_features: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 16, 16, 16)
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 32, 8, 8)
            nn.Conv2d(32, 48, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, 48, 4, 4)
            nn.Conv2d(48, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),  # (N, 64)
        )
        self.hidden = nn.Linear(64, d_features)
        self.head = nn.Linear(d_features, DIGITS_CLASSES)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = F.relu(self.hidden(self.body(x)))  # (N, d_features), the penultimate layer
        return features, self.head(features)


def digits_split(n: int) -> tuple[Tensor, Tensor]:
    """(train, held_out) indices into scikit-learn's digits: every 4th image (i % 4 == 3) is held out.

    A rule on the index, not a random draw, so the split never changes across library versions.
    """
    idx = torch.arange(n)
    held = idx % DIGITS_HELD_OUT_EVERY == DIGITS_HELD_OUT_EVERY - 1
    return idx[~held], idx[held]


def digits_input(images: Tensor) -> Tensor:
    """Images (N, 1|3, H, W) in [0, 1] -> the classifier's input (N, 1, 32, 32) in [-1, 1]."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise GanforgeError(
            f"the digits classifier takes (N, 1, H, W) images, got shape {tuple(images.shape)}"
        )
    x = images.float()
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)  # grey
    return resize_images(x * 2 - 1, DIGITS_SIZE)


def read_weights_meta(path: Path) -> dict[str, Any]:
    """The JSON metadata stored with the classifier weights (accuracy, seed, script)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        raw = (fh.metadata() or {}).get("ganforge", "{}")
    return json.loads(raw)


@functools.lru_cache(maxsize=4)
def load_digits_classifier(path: str | None = None, device: str = "cpu") -> DigitsNet:
    """The shipped digits classifier (or weights at `path`) in eval mode; cached per (path, device)."""
    from safetensors.torch import load_file

    weights = Path(path) if path else DIGITS_WEIGHTS
    if not weights.is_file():
        raise GanforgeError(
            f"digits classifier weights not found: {weights} "
            "(reinstall ganforge, or run benchmarks/train_digits_classifier.py)"
        )
    model = DigitsNet()
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval().requires_grad_(False).to(device)


@torch.inference_mode()
def digits_outputs(images: Tensor, batch_size: int = 1024, device: str = "cpu") -> tuple[Tensor, Tensor]:
    """(features (N, 64), probabilities (N, 10)) of images (N, 1, H, W) in [0, 1], on the CPU."""
    model = load_digits_classifier(device=device)
    features, probs = [], []
    for chunk in images.split(batch_size):
        f, logits = model(digits_input(chunk.to(device)))
        features.append(f.float().cpu())
        probs.append(logits.float().softmax(dim=1).cpu())
    return torch.cat(features), torch.cat(probs)


def digits_features(images: Tensor) -> Tensor:
    """(N, 64) penultimate-layer features of the digits classifier for images (N, 1, H, W) in [0, 1]."""
    return digits_outputs(images)[0]


def digits_probs(images: Tensor) -> Tensor:
    """(N, 10) class probabilities of the digits classifier for images (N, 1, H, W) in [0, 1]."""
    return digits_outputs(images)[1]


# --------------------------------------------------------------------------- extractors


@dataclass
class Extractor:
    """Maps a batch in data space to (features (B, D), probabilities (B, K) or None)."""

    name: str
    fn: Callable[[Tensor], tuple[Tensor, Tensor | None]]
    has_probs: bool = False  # yields class probabilities (for IS)
    domain_classes: int = 0  # > 0: its classes are the data's own labels (a domain classifier)
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. Inception's resize mode and weights file

    def __call__(self, batch: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.fn(batch)


ExtractorFactory = Callable[..., Extractor]
EXTRACTORS: Registry[ExtractorFactory] = Registry("extractor")


@EXTRACTORS.register("digits")
def digits_extractor(device: str = "cpu", **_: Any) -> Extractor:
    """The digits classifier: 64-d penultimate features and 10-class probabilities."""
    load_digits_classifier(device=device)  # fail now, not after sampling
    return Extractor(
        name="digits-cnn",
        fn=lambda x: digits_outputs(x, device=device),
        has_probs=True,
        domain_classes=DIGITS_CLASSES,
        meta={"weights": DIGITS_WEIGHTS.name, **read_weights_meta(DIGITS_WEIGHTS)},
    )


@EXTRACTORS.register("points")
def points_extractor(**_: Any) -> Extractor:
    """Raw coordinates (identity): 2-D toy mixtures, encoded tables, any data as flat vectors."""
    return Extractor(name="points", fn=lambda x: (x.flatten(1).float().cpu(), None))


@EXTRACTORS.register("inception")
def inception_extractor(
    inception_weights: str | Path | None = None, resize: str = "legacy", device: str = "cpu", **_: Any
) -> Extractor:
    """FID Inception-v3: 2048-d pool3 features and 1008-way softmax (greyscale repeated to RGB)."""
    from .inception import RESIZE_MODES, inception_features, load_fid_inception

    if resize not in RESIZE_MODES:
        raise GanforgeError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    model = load_fid_inception(inception_weights, device=device)

    def fn(x: Tensor) -> tuple[Tensor, Tensor]:
        out = inception_features(model, x, batch_size=50, resize=resize, dtype=torch.float32)  # type: ignore[arg-type]
        # The original IS code's logits (pool @ W^T, no bias), as torch-fidelity.
        return out["pool"], out["logits_unbiased"].softmax(dim=1)

    return Extractor(
        name="inception-v3-fid",
        fn=fn,
        has_probs=True,
        meta={"resize": resize, "weights": model.weights_name},
    )


def default_extractor(data_name: str, kind: str, shape: tuple[int, ...]) -> str:
    """The extractor that suits a run's data: digits -> its classifier, 1- or 3-channel images ->
    Inception, anything that is not an image (2-D toys, encoded tables) -> the raw vectors."""
    if data_name == "digits" and kind == "image":
        return "digits"
    if kind != "image":
        return "points"  # the generic fallback: metrics on the data's own coordinates
    if kind == "image" and len(shape) == 3 and shape[0] in (1, 3):
        return "inception"
    raise GanforgeError(
        f"no feature extractor for {data_name!r} ({kind} data of shape {tuple(shape)}); "
        f"choose one of: {', '.join(EXTRACTORS.names())}"
    )


def get_extractor(
    data_name: str,
    kind: str,
    shape: tuple[int, ...],
    name: str | None = None,
    inception_weights: str | Path | None = None,
    resize: str = "legacy",
    device: str = "cpu",
) -> Extractor:
    """The extractor `name` (default: the one that suits the data), ready to use.

    Inception needs its weights: `inception_weights` or $GANFORGE_INCEPTION_WEIGHTS, else the
    error explains where to get them and how to pass them (--inception-weights).
    """
    name = name or default_extractor(data_name, kind, shape)
    factory = EXTRACTORS.get(name)
    if name == "digits" and kind != "image":
        raise GanforgeError(f"the digits classifier needs image data, but {data_name!r} is {kind} data")
    if name == "inception" and kind != "image":
        raise GanforgeError(f"Inception needs image data, but {data_name!r} is {kind} data")
    return factory(inception_weights=inception_weights, resize=resize, device=device)
