"""The multilayer-perceptron GAN of Goodfellow et al. (2014), sized by config.

G: z -> [Linear -> ReLU] x g_layers -> Linear -> tanh (images) or identity (points), reshaped
to the data shape. D: flatten -> [Linear -> LeakyReLU(0.2)] x d_layers -> Linear -> one logit.
With one hidden layer each this is the seed-level GAN of the introductory literature; deeper
and wider versions are the usual toy-benchmark networks (e.g. PacGAN, Lin et al. 2018, App. C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .base import FAMILIES, DataSpec, Family


@dataclass
class MLPConfig:
    z_dim: int = 2  # noise dimension
    g_hidden: int = 256  # width of G's hidden layers
    d_hidden: int = 256  # width of D's hidden layers
    g_layers: int = 3  # hidden layers in G (1 = the seed-level GAN)
    d_layers: int = 3  # hidden layers in D
    out: str = "auto"  # G's output activation: tanh | linear | auto (tanh for images, linear for points)

    def validate(self) -> None:
        for key in ("z_dim", "g_hidden", "d_hidden", "g_layers", "d_layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"net.{key} must be at least 1, got {getattr(self, key)}")
        if self.out not in ("auto", "tanh", "linear"):
            raise ConfigError(f"net.out must be auto, tanh or linear, got {self.out!r}")


def mlp(sizes: list[int], act: nn.Module) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act)
    return layers


def mlp_features(in_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """D's trunk: flatten -> [Linear -> LeakyReLU(0.2)] x layers, (B, ...) -> (B, hidden)."""
    sizes = [in_dim] + [hidden] * layers
    return nn.Sequential(nn.Flatten(), *mlp(sizes, nn.LeakyReLU(0.2)), nn.LeakyReLU(0.2))


class MLPGenerator(nn.Module):
    def __init__(self, cfg: MLPConfig, shape: tuple[int, ...], tanh: bool) -> None:
        super().__init__()
        self.shape = shape
        sizes = [cfg.z_dim] + [cfg.g_hidden] * cfg.g_layers + [math.prod(shape)]
        self.net = nn.Sequential(*mlp(sizes, nn.ReLU()), *([nn.Tanh()] if tanh else []))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.shape)  # (B, *shape)


R1_PER_VARIANCE = 0.02  # the points recipe's R1 gamma per unit of the data's per-dimension variance
JACOBIAN_LIMIT = 20.0  # the points recipe's Jacobian-based truncation at sampling (x the median norm)


@FAMILIES.register("mlp")
class MLP(Family):
    name = "mlp"
    Config = MLPConfig
    data_kinds = ("points", "image")
    tiny = {"g_hidden": 16, "d_hidden": 16, "g_layers": 1, "d_layers": 1}
    description = "multilayer perceptron G and D (Goodfellow 2014); 2-D toys or small images"

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        if spec.kind == "points":
            # 128-wide nets for 10,000 steps beat 256-wide for 3,000 at a similar cost on the
            # PacGAN protocol (10 seeds, benchmarks/results/toy_modes.jsonl): grid25 from 21 to 24
            # modes and from 52 % to 93 % high-quality samples; ring8 from 93 % to 97 %. With R1
            # and the Jacobian truncation below, 8,000 steps keep every mode on every seed at
            # >= 99.2 % high quality (10 seeds) in 20 % less time, which keeps a run under a
            # minute on 2 busy cores (10,000 steps took 46-73 s, with the machine's load).
            recipe: dict[str, Any] = {
                "net": {"g_hidden": 128, "d_hidden": 128},
                "train": {
                    "steps": 8_000,
                    "batch_size": 256,
                    "g_lr": 1e-3,
                    "d_lr": 1e-3,
                    "beta1": 0.5,
                    "log_every": 100,
                    "sample_every": 2000,
                    "ckpt_every": 2000,
                    "n_grid": 2500,
                },
            }
            if spec.variance > 0 and loss not in ("wgan", "wgan-gp"):
                # R1 keeps the mode proportions even (reverse KL 0.08 -> 0.002 on ring8, 0.13 ->
                # 0.005 on grid25, toy_modes.jsonl). Its gamma is in squared data units: 0.02 per
                # unit of the data's variance (ring8 0.01, grid25 0.16) was best on both.
                recipe["stab"] = {"r1_gamma": float(f"{R1_PER_VARIANCE * spec.variance:.2g}")}
            # A continuous G on a connected latent leaves 3-9 % of its samples in transit between
            # disconnected modes, and no training change removed them (toy_r1_screen/README.md).
            # Jacobian-based truncation at 20 x the median norm redraws those (5.3 % of draws on
            # ring8, 11.2 % on grid25): high quality 96.1 -> 99.7 % and 90.8 -> 99.5 % over 10 seeds,
            # mode proportions unchanged (toy_modes.jsonl). On connected data it rejects ~nothing.
            recipe["sample"] = {"jacobian_limit": JACOBIAN_LIMIT}
            return recipe
        return {"net": {"z_dim": 64, "g_hidden": 512, "d_hidden": 512, "g_layers": 2, "d_layers": 2}}

    def build(self) -> tuple[nn.Module, nn.Module]:
        tanh = self.net.out == "tanh" or (self.net.out == "auto" and self.spec.kind == "image")
        features = mlp_features(math.prod(self.d_shape), self.net.d_hidden, self.net.d_layers)
        return MLPGenerator(self.net, self.spec.shape, tanh), self.make_discriminator(
            features, self.net.d_hidden
        )
