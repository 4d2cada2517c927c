"""Image grids with numpy + Pillow (no torchvision), and scatter plots of 2-D samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_uint8_grid(
    images: Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255
) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] -> one (H', W', C) uint8 grid, `nrow` images per row."""
    x = images.detach().to("cpu", torch.float32).clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    arr = (x * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    grid = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = arr[i]
    return grid


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, min_size: int = 256) -> None:
    """Save images in [0, 1] as a PNG grid; small images are upscaled (nearest) to be visible."""
    grid = to_uint8_grid(images, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid[..., :3])
    scale = max(1, math.ceil(min_size / max(img.size)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def save_points(fake: Tensor, path: str | Path, real: Tensor | None = None, title: str = "") -> None:
    """Scatter of generated 2-D points (over real ones, if given) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if real is not None:
        r = real.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, c="#bbbbbb", alpha=0.5, label="real", linewidths=0)
    f = fake.detach().cpu().numpy()
    ax.scatter(f[:, 0], f[:, 1], s=2, c="#d62728", alpha=0.6, label="generated", linewidths=0)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
