"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real AND fake images
before D, in both D and G phases, so D cannot memorise a small dataset.

Policies: `color` (brightness, saturation, contrast), `translation` (shift by up to 1/8 of the
image, zero padding), `cutout` (zero a square of half the image side). Images are in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout")


def _rand(x: Tensor, gen: torch.Generator | None, *shape: int) -> Tensor:
    return torch.rand(x.shape[0], *shape, device=x.device, dtype=x.dtype, generator=gen)


def color(x: Tensor, gen: torch.Generator | None) -> Tensor:
    x = x + (_rand(x, gen, 1, 1, 1) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, gen, 1, 1, 1) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, gen, 1, 1, 1) + 0.5) + mean  # contrast


def translation(x: Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> Tensor:
    """Shift each image by an integer offset in [-ratio*size, ratio*size], zero-filled."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (_rand(x, gen)[:, None] * (2 * sh + 1)).long() - sh  # (B, 1)
    dx = (_rand(x, gen)[:, None] * (2 * sw + 1)).long() - sw
    rows = (torch.arange(h, device=x.device)[None] - dy).clamp(-1, h)  # (B, H); -1/h index the padding
    cols = (torch.arange(w, device=x.device)[None] - dx).clamp(-1, w)
    padded = F.pad(x, (1, 1, 1, 1))  # (B, C, H+2, W+2): index i+1 is pixel i, 0 and H+1 are zero
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, (rows + 1)[:, :, None], (cols + 1)[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout(x: Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> Tensor:
    """Zero one square of side ratio*size at a random position in each image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (_rand(x, gen) * (h + (1 - ch % 2))).long()[:, None]  # (B, 1) centres
    cx = (_rand(x, gen) * (w + (1 - cw % 2))).long()[:, None]
    ys = torch.arange(h, device=x.device)[None]
    xs = torch.arange(w, device=x.device)[None]
    in_y = ((ys - cy + ch // 2) >= 0) & ((ys - cy + ch // 2) < ch)  # (B, H)
    in_x = ((xs - cx + cw // 2) >= 0) & ((xs - cx + cw // 2) < cw)  # (B, W)
    mask = ~(in_y[:, :, None] & in_x[:, None, :])  # (B, H, W)
    return x * mask[:, None].to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: str, gen: torch.Generator | None = None) -> Tensor:
    """Apply the comma-separated `policy` ('color,translation,cutout') to images (B, C, H, W)."""
    for name in filter(None, (p.strip() for p in policy.split(","))):
        x = TRANSFORMS[name](x, gen)
    return x
