"""Built-in datasets that need no download: 2-D toy mixtures and scikit-learn's digits.

The toy mixtures are the mode-collapse benchmarks of the literature: `ring8` and `grid25`
follow VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018, Sec. 5.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..registry import Registry
from .base import Dataset, resize_images

DATASETS: Registry[Callable[[DataConfig], Dataset]] = Registry("dataset")


def gaussian_mixture(centres: torch.Tensor, std: float, n: int, seed: int, name: str) -> Dataset:
    """n points from an equal-weight isotropic Gaussian mixture; labels are the component index."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.randint(len(centres), (n,), generator=g)
    x = centres[comp] + std * torch.randn(n, centres.shape[1], generator=g)
    return Dataset(
        x=x.float(),
        y=comp,
        kind="points",
        name=name,
        modes=centres.float(),
        mode_std=std,
        class_names=[str(i) for i in range(len(centres))],
    )


@DATASETS.register("ring8")
def ring8(cfg: DataConfig) -> Dataset:
    """8 Gaussians evenly spaced on the unit circle, sigma = 0.01 (PacGAN, Sec. 5.1)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    centres = torch.stack([angles.cos(), angles.sin()], dim=1)
    return gaussian_mixture(centres, 0.01, cfg.n_points, cfg.seed, "ring8")


@DATASETS.register("grid25")
def grid25(cfg: DataConfig) -> Dataset:
    """25 Gaussians on the grid {-4, -2, 0, 2, 4}^2, sigma = 0.05 (PacGAN, Sec. 5.1)."""
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    centres = torch.cartesian_prod(axis, axis)
    return gaussian_mixture(centres, 0.05, cfg.n_points, cfg.seed, "grid25")


@DATASETS.register("moons")
def moons(cfg: DataConfig) -> Dataset:
    """Two interleaving half circles (scikit-learn's make_moons, noise 0.05), centred."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=cfg.n_points, noise=0.05, random_state=cfg.seed)
    x = (x - np.array([0.5, 0.25])).astype(np.float32)
    return Dataset(
        x=torch.from_numpy(x),
        y=torch.from_numpy(y).long(),
        kind="points",
        name="moons",
        class_names=["upper", "lower"],
    )


@DATASETS.register("spiral")
def spiral(cfg: DataConfig) -> Dataset:
    """A two-armed spiral, radius up to 1, with small Gaussian noise (sigma = 0.02)."""
    g = torch.Generator().manual_seed(cfg.seed)
    t = torch.rand(cfg.n_points, generator=g).sqrt() * 3 * math.pi  # sqrt: uniform density along the arm
    arm = torch.randint(2, (cfg.n_points,), generator=g)
    angle = t + math.pi * arm
    r = t / (3 * math.pi)
    x = torch.stack([r * angle.cos(), r * angle.sin()], dim=1)
    x = x + 0.02 * torch.randn(x.shape, generator=g)
    return Dataset(x=x.float(), y=arm, kind="points", name="spiral", class_names=["arm0", "arm1"])


def digit_images(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as (N, 1, S, S) in [-1, 1] and their labels (N,)."""
    from sklearn.datasets import load_digits

    if resolution < 8:
        raise DataError(f"digits: resolution must be at least 8 px, got {resolution}")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)  # (1797, 1, 8, 8)
    return resize_images(x, resolution), torch.from_numpy(bunch.target).long()


@DATASETS.register("digits")
def digits(cfg: DataConfig) -> Dataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes, values 0-16),
    scaled to [-1, 1] and resized to `data.resolution` (default 32 px)."""
    x, y = digit_images(cfg.resolution or 32)
    return Dataset(x=x, y=y, kind="image", name="digits", class_names=[str(i) for i in range(10)])


@DATASETS.register("stacked_digits")
def stacked_digits(cfg: DataConfig) -> Dataset:
    """Three random digits as the R, G, B channels of one image: 1,000 modes, the analogue of
    Stacked MNIST (Metz et al. 2017; Lin et al. 2018, Sec. 5.2); `data.n_points` images."""
    x, y = digit_images(cfg.resolution or 32)
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randint(len(x), (cfg.n_points, 3), generator=g)  # (N, 3): one digit per channel
    images = x[idx].squeeze(2)  # (N, 3, S, S)
    labels = y[idx[:, 0]] * 100 + y[idx[:, 1]] * 10 + y[idx[:, 2]]
    return Dataset(
        x=images, y=labels, kind="image", name="stacked_digits", class_names=[f"{i:03d}" for i in range(1000)]
    )
