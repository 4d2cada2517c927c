"""DCGAN (Radford, Metz & Chintala 2016, Sec. 3 and Fig. 1) for square images of 8 to 128 px.

G projects z with a linear layer to a (C0, s0, s0) map, then doubles the resolution with
stride-2 transposed convolutions (batch norm + ReLU) up to the image size, ending in tanh
(`net.g_up=resize`: nearest upsampling + 3x3 convolutions instead, Odena et al. 2016).
D mirrors it with stride-2 convolutions and LeakyReLU(0.2), batch norm on every layer but the
first, and a linear layer on the flattened last map giving one logit. No pooling, no dropout.
Sizes s0 * 2^k with 3 <= s0 <= 7 are supported (32 = 4*2^3, 28 = 7*2^2, 48 = 6*2^3, ...).
Weights are drawn from N(0, 0.02) as in the paper; batch-norm scales from N(1, 0.02).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .base import FAMILIES, DataSpec, Family


@dataclass
class DCGANConfig:
    z_dim: int = 100  # noise dimension (100 in the paper)
    g_channels: int = 64  # G's channels at the output resolution; doubled at each halving
    d_channels: int = 64  # D's channels at the input resolution; doubled at each halving
    max_channels: int = 512  # cap on channels at low resolution
    g_up: str = "deconv"  # G's up-block: deconv (4x4 stride-2 transposed conv, the paper) | resize (nearest x2 + 3x3 conv, Odena et al. 2016)
    d_norm: str = (
        "batch"  # D's normalisation: batch | layer | none (batch norm breaks WGAN-GP's per-sample penalty)
    )

    def validate(self) -> None:
        for key in ("z_dim", "g_channels", "d_channels", "max_channels"):
            if getattr(self, key) < 1:
                raise ConfigError(f"net.{key} must be at least 1, got {getattr(self, key)}")
        if self.g_up not in ("deconv", "resize"):
            raise ConfigError(f"net.g_up must be deconv or resize, got {self.g_up!r}")
        if self.d_norm not in ("batch", "layer", "none"):
            raise ConfigError(f"net.d_norm must be batch, layer or none, got {self.d_norm!r}")


def base_size(resolution: int) -> tuple[int, int]:
    """resolution = s0 * 2^k with 3 <= s0 <= 7, k >= 1 -> (s0, k)."""
    if not 8 <= resolution <= 128:
        raise ConfigError(f"dcgan supports square images of 8 to 128 px, got {resolution} px")
    s0, k = resolution, 0
    while s0 > 7 and s0 % 2 == 0:
        s0, k = s0 // 2, k + 1
    if s0 > 7 or k == 0:
        raise ConfigError(
            f"dcgan needs a resolution of the form s*2^k with 3 <= s <= 7 (e.g. 16, 28, 32, 48, 64), got {resolution} px; "
            "set data.resolution"
        )
    return s0, k


def widths(base: int, k: int, cap: int) -> list[int]:
    """Channels from the highest resolution (index 0) down to the base map (index k)."""
    return [min(base * 2**i, cap) for i in range(k + 1)]


def generator_trunk(
    cfg: DCGANConfig, shape: tuple[int, ...], norm: Callable[[int], nn.Module] = nn.BatchNorm2d
) -> tuple[nn.Sequential, nn.Sequential]:
    """G's layers as (project, up): z (B, z_dim) -> (B, C0, s0, s0) -> images (B, C, H, W) in [-1, 1].

    `norm(channels)` builds each normalisation layer (batch norm here; the conditional families
    pass class-conditional batch norm, with the same module positions and parameter names)."""
    c_img, h, _ = shape
    s0, k = base_size(h)
    ch = widths(cfg.g_channels, k, cfg.max_channels)[::-1]  # low -> high resolution
    project = nn.Sequential(
        nn.Linear(cfg.z_dim, ch[0] * s0 * s0, bias=False),
        nn.Unflatten(1, (ch[0], s0, s0)),
        norm(ch[0]),
        nn.ReLU(True),
    )
    ups: list[nn.Module] = []
    for i in range(k - 1):
        ups += [*up_conv(cfg.g_up, ch[i], ch[i + 1], bias=False), norm(ch[i + 1]), nn.ReLU(True)]
    ups += [*up_conv(cfg.g_up, ch[k - 1], c_img, bias=True), nn.Tanh()]
    return project, nn.Sequential(*ups)


def up_conv(kind: str, c_in: int, c_out: int, bias: bool) -> list[nn.Module]:
    """A x2 up-block: the paper's 4x4 stride-2 transposed conv, or nearest upsampling + 3x3 conv,
    which avoids checkerboard artifacts (Odena et al. 2016) and which the engine computes as one
    4x4 transposed convolution (`train.fuse_upsample`)."""
    if kind == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)]
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: DCGANConfig, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.project, self.up = generator_trunk(cfg, shape)

    def forward(self, z: Tensor) -> Tensor:
        return self.up(self.project(z))  # (B, C, H, W) in [-1, 1]


def dcgan_features(cfg: DCGANConfig, shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """D's convolutional trunk, flattened: (B, C, H, W) -> (B, F); returns (module, F)."""
    c_img, h, _ = shape
    s0, k = base_size(h)
    ch = widths(cfg.d_channels, k, cfg.max_channels)  # high -> low resolution
    layers: list[nn.Module] = [nn.Conv2d(c_img, ch[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
    for i in range(k - 1):
        layers.append(nn.Conv2d(ch[i], ch[i + 1], 4, 2, 1, bias=cfg.d_norm == "none"))
        if cfg.d_norm == "batch":
            layers.append(nn.BatchNorm2d(ch[i + 1]))
        elif cfg.d_norm == "layer":
            layers.append(nn.GroupNorm(1, ch[i + 1]))  # layer norm over (C, H, W)
        layers.append(nn.LeakyReLU(0.2, True))
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), ch[k - 1] * s0 * s0


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, N(1, 0.02) batch-norm scales, zero biases (Radford et al. 2016, Sec. 4)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@FAMILIES.register("dcgan")
class DCGAN(Family):
    name = "dcgan"
    Config = DCGANConfig
    data_kinds = ("image",)
    tiny = {"z_dim": 8, "g_channels": 4, "d_channels": 4}
    description = "deep convolutional GAN (Radford 2016) for square images of 8-128 px"

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if spec.shape[-1] <= 32:
            # Small images (digits at 32 px): half the paper's widths trains ~3x faster on a CPU and
            # still gives clean digits in 1,500 steps (benchmarks/digits_dcgan.py).
            out["net"] = {"g_channels": 32, "d_channels": 32}
            out["train"] = {"steps": 1500}
            if loss not in ("wgan", "wgan-gp"):
                # Lazy R1 (Mescheder et al. 2018, Eq. 9) halves digits-FID at 1,500 steps (1.53 / 1.27
                # -> 0.75 / 0.70 on seeds 0 / 1, benchmarks/results/digits_dcgan.jsonl) and was the
                # best stabiliser on stacked digits (999.7 modes, KL 0.14 vs 989, 0.31, 3 seeds).
                out["stab"] = {"r1_gamma": 1.0}
        if loss == "wgan-gp":  # Gulrajani 2017, Alg. 1; batch norm breaks the per-sample penalty
            out.setdefault("net", {})["d_norm"] = "layer"
            out.setdefault("train", {}).update(n_dis=5, beta1=0.0, beta2=0.9, g_lr=1e-4, d_lr=1e-4)
        elif loss == "wgan":  # Arjovsky 2017, Alg. 1 (RMSProp there; Adam here)
            out.setdefault("train", {}).update(n_dis=5, g_lr=5e-5, d_lr=5e-5)
        return out

    def build(self) -> tuple[nn.Module, nn.Module]:
        if self.spec.shape[1] != self.spec.shape[2]:
            raise ConfigError(f"dcgan needs square images, got {self.spec.shape[1]}x{self.spec.shape[2]}")
        G = DCGANGenerator(self.net, self.spec.shape)
        D = self.make_discriminator(*dcgan_features(self.net, self.d_shape))
        dcgan_init(G)
        dcgan_init(D)
        return G, D
