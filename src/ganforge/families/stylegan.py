"""Style-based GAN: StyleGAN's generator (Karras et al. 2019, "A Style-Based Generator Architecture
for Generative Adversarial Networks") in its StyleGAN2 form (Karras et al. 2020, "Analyzing and
Improving the Image Quality of StyleGAN"), with StyleGAN2's residual discriminator.

- G = synthesis(map(z)). The mapping network turns z into an intermediate latent w (Sec. 2);
  the synthesis network starts from a learnt constant s0 x s0 input and, per resolution, runs two
  3x3 modulated, demodulated convolutions (one for the base block), each with per-pixel noise and
  LeakyReLU, and adds a toRGB of its features to the upsampled image so far: the skip
  architecture (Karras et al. 2020, Sec. 4.1, Fig. 7b). Layer i takes its style from w_i, one of
  n_ws = 2 * (blocks) per-layer copies of w; a toRGB shares its w with the next block's first conv.
  A tanh maps the summed image to the data range [-1, 1] (StyleGAN2 clips when saving instead).
- Style mixing regularisation (Karras et al. 2019, Sec. 3.1): in training mode, with probability
  `style_mixing` per batch, a second z is mapped and w_i switches to it from a layer cutoff drawn
  uniformly in [1, n_ws).
- Truncation trick (Karras et al. 2019, Sec. 3.1 and App. B): G tracks w_avg, an exponential moving
  average of w updated in training mode; out of training mode w = w_avg + psi (w - w_avg). The
  engine's G_ema copies G's buffers, so the EMA generator truncates towards G's w_avg (as in
  StyleGAN2-ADA).
- D: fromRGB, then residual blocks [conv -> downsample -> conv] + [downsample -> 1x1 conv],
  summed and scaled by 1/sqrt(2), down to the base map, then a conv and a fully connected layer
  (Karras et al. 2020, Fig. 7c); the shared wrapper adds the stabiliser extras and the linear head.

Randomness in G (noise images, mixing decisions, second latents) comes from torch's global
generator, which the engine seeds and checkpoints: runs and resumes stay exact. Out of training
mode G is deterministic: fixed noise images, no mixing, so samples depend on z alone.

Resolutions: square images of s0 * 2^k px, 3 <= s0 <= 7, from 8 to 128 px; powers of two have
StyleGAN's 4 x 4 constant input, other sizes (28 px MNIST, 48 px) start from s0 x s0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn.style import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    SynthesisLayer,
    ToRGB,
    downsample2x,
    lrelu,
    upsample2x,
)
from .base import FAMILIES, DataSpec, Family


@dataclass
class StyleGANConfig:
    z_dim: int = 512  # dimension of the input latent z (Karras et al. 2019: 512)
    w_dim: int = 512  # dimension of the intermediate latent w and of the mapping layers
    n_mapping: int = 8  # fully connected layers of the mapping network z -> w (2019: 8)
    channels: int = 64  # feature maps at the output resolution; doubled per halving of the resolution
    max_channels: int = 512  # cap on the feature maps at low resolutions (2020: 512)
    style_mixing: float = 0.9  # probability that a training batch mixes two latents (2020: 0.9)
    truncation_psi: float = 1.0  # truncation trick at sampling: w_avg + psi (w - w_avg) (1 = off)
    w_avg_decay: float = 0.995  # decay of the moving average w_avg tracked in training
    noise: bool = True  # per-pixel noise inputs in the synthesis layers

    def validate(self) -> None:
        for key in ("z_dim", "w_dim", "n_mapping", "channels", "max_channels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"net.{key} must be at least 1, got {getattr(self, key)}")
        if not 0.0 <= self.style_mixing <= 1.0:
            raise ConfigError(f"net.style_mixing must lie in [0, 1], got {self.style_mixing}")
        if not -1.0 <= self.truncation_psi <= 1.0:
            raise ConfigError(f"net.truncation_psi must lie in [-1, 1], got {self.truncation_psi}")
        if not 0.0 <= self.w_avg_decay < 1.0:
            raise ConfigError(f"net.w_avg_decay must lie in [0, 1), got {self.w_avg_decay}")


def base_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """Square side s0 * 2^k with 3 <= s0 <= 7, k >= 1, from 8 to 128 px -> (s0, k)."""
    _, h, w = shape
    if h != w or not 8 <= h <= 128:
        raise ConfigError(f"stylegan needs square images of 8 to 128 px, got {h}x{w}; set data.resolution")
    s0, k = h, 0
    while s0 > 7 and s0 % 2 == 0:
        s0, k = s0 // 2, k + 1
    if s0 > 7:
        raise ConfigError(
            f"stylegan needs a side of the form s*2^k with 3 <= s <= 7 (e.g. 16, 28, 32, 64), got {h} px; "
            "set data.resolution"
        )
    return s0, k


def widths(cfg: StyleGANConfig, k: int) -> list[int]:
    """Channels from the highest resolution (index 0) down to the base map (index k)."""
    return [min(cfg.channels * 2**i, cfg.max_channels) for i in range(k + 1)]


def truncate(w: Tensor, w_avg: Tensor, psi: float) -> Tensor:
    """w' = w_avg + psi (w - w_avg) (Karras et al. 2019, App. B)."""
    return w_avg.to(w.dtype).lerp(w, psi)


def broadcast(w: Tensor, n_ws: int) -> Tensor:
    """The same latent for every layer: (B, w_dim) -> (B, n_ws, w_dim)."""
    return w.unsqueeze(1).expand(-1, n_ws, -1)


def mix_styles(w1: Tensor, w2: Tensor, n_ws: int, cutoff: int) -> Tensor:
    """Per-layer latents (B, n_ws, w_dim): w1 for layers < cutoff, w2 from cutoff on (style mixing,
    Karras et al. 2019, Sec. 3.1)."""
    return torch.cat([broadcast(w1, cutoff), broadcast(w2, n_ws - cutoff)], dim=1)


class SynthesisBlock(nn.Module):
    """One resolution: [upsample -> conv ->] conv, each modulated with noise, then toRGB added to
    the upsampled image so far (Karras et al. 2020, Fig. 7b). Consumes n_convs + 1 latents."""

    def __init__(
        self, c_in: int, c_out: int, cfg: StyleGANConfig, resolution: int, c_img: int, first: bool
    ) -> None:
        super().__init__()
        up = [] if first else [SynthesisLayer(c_in, c_out, cfg.w_dim, resolution, up=True, noise=cfg.noise)]
        same = SynthesisLayer(c_out, c_out, cfg.w_dim, resolution, up=False, noise=cfg.noise)
        self.layers = nn.ModuleList([*up, same])
        self.to_rgb = ToRGB(c_out, c_img, cfg.w_dim)
        self.n_convs = len(self.layers)

    def forward(self, x: Tensor, img: Tensor | None, ws: Tensor) -> tuple[Tensor, Tensor]:
        for i, layer in enumerate(self.layers):  # ws (B, n_convs + 1, w_dim)
            x = layer(x, ws[:, i])
        rgb = self.to_rgb(x, ws[:, self.n_convs])
        return x, rgb if img is None else upsample2x(img) + rgb


class StyleGenerator(nn.Module):
    """z (B, z_dim) -> images (B, C, H, W) in [-1, 1]; `psi` truncates out of training mode."""

    def __init__(self, cfg: StyleGANConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        s0, k = base_size(shape)
        ch = widths(cfg, k)[::-1]  # low -> high resolution
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.n_mapping)
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))
        self.const = nn.Parameter(torch.randn(ch[0], s0, s0))  # the learnt constant input
        self.blocks = nn.ModuleList(
            SynthesisBlock(ch[max(i - 1, 0)], ch[i], cfg, s0 * 2**i, shape[0], first=i == 0)
            for i in range(k + 1)
        )
        self.n_ws = sum(b.n_convs for b in self.blocks) + 1
        self.style_mixing, self.w_avg_decay = cfg.style_mixing, cfg.w_avg_decay

    def styles(self, z: Tensor, psi: float = 1.0) -> Tensor:
        """Per-layer latents (B, n_ws, w_dim): mixed in training mode, truncated otherwise."""
        w = self.mapping(z)  # (B, w_dim)
        if not self.training:
            return broadcast(w if psi == 1 else truncate(w, self.w_avg, psi), self.n_ws)
        with torch.no_grad():  # w_avg <- decay * w_avg + (1 - decay) * mean_batch(w)
            self.w_avg.lerp_(w.detach().float().mean(0), 1.0 - self.w_avg_decay)
        if self.style_mixing and torch.rand(()).item() < self.style_mixing:
            cutoff = int(torch.randint(1, self.n_ws, ()).item())
            return mix_styles(w, self.mapping(torch.randn_like(z)), self.n_ws, cutoff)
        return broadcast(w, self.n_ws)

    def synthesis(self, ws: Tensor) -> Tensor:
        """Per-layer latents (B, n_ws, w_dim) -> images (B, C, H, W) in [-1, 1]."""
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        img, i = None, 0
        for block in self.blocks:
            x, img = block(x, img, ws[:, i : i + block.n_convs + 1])
            i += block.n_convs
        return torch.tanh(img)

    def forward(self, z: Tensor, psi: float = 1.0) -> Tensor:
        return self.synthesis(self.styles(z, psi))


class DBlock(nn.Module):
    """Residual D block (Karras et al. 2020, Fig. 7c): (conv -> downsample -> conv) + (downsample
    -> 1x1 conv), scaled by 1/sqrt(2) to keep the variance; (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3)
        self.conv1 = EqualConv2d(c_in, c_out, 3)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = lrelu(self.conv1(downsample2x(lrelu(self.conv0(x)))))
        return (h + self.skip(downsample2x(x))) * math.sqrt(0.5)


class ResidualFeatures(nn.Module):
    """D's trunk: (B, C, H, W) -> fromRGB -> residual blocks to s0 x s0 -> conv -> FC -> (B, F)."""

    def __init__(self, cfg: StyleGANConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        s0, k = base_size(shape)
        ch = widths(cfg, k)  # high -> low resolution
        self.from_rgb = EqualConv2d(shape[0], ch[0], 1)
        self.blocks = nn.Sequential(*(DBlock(ch[i], ch[i + 1]) for i in range(k)))
        self.conv = EqualConv2d(ch[k], ch[k], 3)
        self.fc = EqualLinear(ch[k] * s0 * s0, ch[k])
        self.n_features = ch[k]

    def forward(self, x: Tensor) -> Tensor:
        h = lrelu(self.conv(self.blocks(lrelu(self.from_rgb(x)))))
        return lrelu(self.fc(h.flatten(1)))  # (B, F)


@FAMILIES.register("stylegan")
class StyleGAN(Family):
    name = "stylegan"
    Config = StyleGANConfig
    data_kinds = ("image",)
    tiny = {"z_dim": 8, "w_dim": 8, "n_mapping": 1, "channels": 4, "max_channels": 8}
    description = (
        "style-based G with modulated convs, noise and style mixing (StyleGAN2, Karras 2020); 8-128 px"
    )

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        # StyleGAN2's optimiser: Adam, lr 0.002, betas (0, 0.99) (Karras et al. 2020, App. B).
        out: dict[str, Any] = {"train": {"beta1": 0.0, "beta2": 0.99, "g_lr": 2e-3, "d_lr": 2e-3}}
        if spec.shape[-1] <= 32:
            # Digits at 32 px on 2 CPU cores: 16 maps at 32 px (64 below 16 px), a 2-layer mapping
            # network (as StyleGAN2-ADA's CIFAR-10 setting) and batch 32 take ~0.35 s a step; at
            # 1,800 steps digits-FID is 0.87 (DCGAN: 1.53 at 1,500 without R1, 0.75 with its R1 recipe).
            out["net"] = {"z_dim": 128, "w_dim": 128, "n_mapping": 2, "channels": 16, "max_channels": 64}
            out["train"].update(steps=1500, batch_size=32)
        if loss == "wgan-gp":  # Gulrajani 2017, Alg. 1
            out["train"].update(n_dis=5, beta1=0.0, beta2=0.9, g_lr=1e-4, d_lr=1e-4)
        elif loss != "wgan":
            # Lazy R1 every 16 D steps (Karras et al. 2020, Sec. 3.1). gamma on digits, FID at
            # 1,800 steps: 0.1 -> 1.80, 1 -> 0.98, 4 -> 0.87.
            out["stab"] = {"r1_gamma": 4.0, "reg_every": 16}
        return out

    def build(self) -> tuple[nn.Module, nn.Module]:
        G = StyleGenerator(self.net, self.spec.shape)
        features = ResidualFeatures(self.net, self.d_shape)
        return G, self.make_discriminator(features, features.n_features)

    def generate(self, G: nn.Module, z: Tensor, y: Tensor | None = None) -> Tensor:
        return G(z, psi=self.net.truncation_psi)
