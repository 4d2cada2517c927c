"""Class-conditional GAN with a projection discriminator (Miyato & Koyama 2018, "cGANs with
Projection Discriminator", ICLR 2018), on the DCGAN trunk for images and the MLP trunk for points.

- G(z, y): DCGAN's generator (Radford et al. 2016, families/dcgan.py) with every batch norm made
  class-conditional, x -> gamma_y * BN(x) + beta_y (Miyato & Koyama 2018, Sec. 5.1; de Vries et
  al. 2017), where gamma_y = 1 + W_gamma e_y and beta_y = W_beta e_y are linear in one class
  embedding e_y shared by all layers (BigGAN, Brock et al. 2019). For points:
  [Linear -> conditional BN -> ReLU] x g_layers -> Linear.
- D(x, y) = psi(phi(x)) + <v_y, phi(x)> (Eq. 3): phi is DCGAN's (or the MLP's) D trunk plus the
  shared stabiliser extras, psi the linear head, v_y a learnt class embedding
  (:class:`ganforge.nn.ProjectionDiscriminator`; under PacGAN one embedding per slot of a pack).
- Labels of the fakes: in the D and G phases the fakes are generated for the real batch's labels,
  y_fake = y_real. So y ~ p_data(y), the marginal D's real side has; each D step compares two
  batches with the same label multiset, so the label histogram carries no signal and only
  p(x | y) is judged; and the WGAN-GP interpolates and R2's fakes pair each image with the label it
  was made for. Sampling asks classes in turn (0, 1, ..., K-1, 0, ...).

Every shared stabiliser composes: the base class's hooks call D(x), so this family binds the
labels (:class:`Given`) for the D-phase and regularisation losses and rewrites the G phase and the
unrolled look-ahead, which also read D's features and head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nn import ConditionalBatchNorm, ConditionalSequential, ProjectionDiscriminator
from .base import FAMILIES, DataSpec, Family, Stats, strip
from .dcgan import DCGANConfig, dcgan_features, dcgan_init, generator_trunk
from .mlp import mlp_features


@dataclass
class CGANConfig(DCGANConfig):
    """DCGAN's fields size the image networks; the `points:` fields size the MLP ones."""

    embed_dim: int = 64  # G's shared class embedding, projected to every conditional BN's gain and bias
    g_hidden: int = 256  # points: width of G's hidden layers
    d_hidden: int = 256  # points: width of D's hidden layers
    g_layers: int = 3  # points: hidden layers in G (each with conditional batch norm)
    d_layers: int = 3  # points: hidden layers in D

    def validate(self) -> None:
        super().validate()
        for key in ("embed_dim", "g_hidden", "d_hidden", "g_layers", "d_layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"net.{key} must be at least 1, got {getattr(self, key)}")


class ImageGenerator(nn.Module):
    """DCGAN's G with conditional batch norm: (z (B, z_dim), y (B,)) -> (B, C, H, W) in [-1, 1]."""

    def __init__(self, cfg: CGANConfig, shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_classes, cfg.embed_dim)  # e_y ~ N(0, I) at init
        project, up = generator_trunk(cfg, shape, norm=lambda ch: ConditionalBatchNorm(ch, cfg.embed_dim))
        self.project, self.up = ConditionalSequential(*project), ConditionalSequential(*up)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        c = self.embed(y)  # (B, embed_dim)
        return self.up(self.project(z, c), c)


class PointsGenerator(nn.Module):
    """(z (B, z_dim), y (B,)) -> [Linear -> conditional BN -> ReLU] x g_layers -> Linear -> (B, *shape)."""

    def __init__(self, cfg: CGANConfig, shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(n_classes, cfg.embed_dim)
        layers: list[nn.Module] = []
        width = cfg.z_dim
        for _ in range(cfg.g_layers):
            layers += [
                nn.Linear(width, cfg.g_hidden, bias=False),
                ConditionalBatchNorm(cfg.g_hidden, cfg.embed_dim, image=False),
                nn.ReLU(),
            ]
            width = cfg.g_hidden
        layers.append(nn.Linear(width, math.prod(shape)))
        self.net = ConditionalSequential(*layers)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.net(z, self.embed(y)).view(z.shape[0], *self.shape)


class Given(nn.Module):
    """D(., y) as a one-argument module, for the shared losses and penalties that call D(x)."""

    def __init__(self, D: ProjectionDiscriminator, y: Tensor) -> None:
        super().__init__()
        self.D, self.y = D, y

    def forward(self, x: Tensor) -> Tensor:
        return self.D(x, self.y)


def d_score(
    D: ProjectionDiscriminator, h: Tensor, y: Tensor, params: dict[str, Tensor] | None = None
) -> Tensor:
    """D's logits (B / pac,) from its features h = phi(x), optionally under substituted (unrolled) parameters."""
    if params is None:
        return D.score(h, y)
    h = torch.func.functional_call(D.extras, strip(params, "extras."), (h,))
    psi = torch.func.functional_call(D.head, strip(params, "head."), (h,)).squeeze(1)
    v = torch.func.functional_call(D.project, strip(params, "project."), (h,))
    return psi + D.projection(v, y)


@FAMILIES.register("cgan")
class CGAN(Family):
    name = "cgan"
    Config = CGANConfig
    data_kinds = ("image", "points")
    conditional = True
    tiny = {
        **{"z_dim": 8, "g_channels": 4, "d_channels": 4},
        **{"g_hidden": 16, "d_hidden": 16, "g_layers": 1, "d_layers": 1},
    }
    description = (
        "class-conditional GAN: conditional-BN G, projection D (Miyato & Koyama 2018); labelled data"
    )

    def __init__(self, cfg: Any, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if spec.n_classes < 1:
            raise ConfigError(
                f"model 'cgan' needs class labels, but {cfg.data.name!r} has none; "
                "use labelled data (digits, ring8, grid25, moons, spiral, a folder of class folders)"
            )

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        if spec.kind == "points":
            return {
                "net": {"z_dim": 2},
                "train": {
                    "steps": 3000,
                    "batch_size": 256,
                    "g_lr": 1e-3,
                    "d_lr": 1e-3,
                    "log_every": 100,
                    "sample_every": 1000,
                    "ckpt_every": 1000,
                    "n_grid": 2500,
                },
            }
        out: dict[str, Any] = {"train": {}}
        if 1 < spec.n_classes <= 16:
            # Sample grids of K x K images, K per row: column c shows class c.
            out["train"]["n_grid"] = spec.n_classes**2
        if spec.shape[-1] <= 32:
            out["net"] = {"g_channels": 32, "d_channels": 32}
            out["train"]["steps"] = 1500
            if loss not in ("wgan", "wgan-gp"):
                # Lazy R1, gamma 1, as the DCGAN recipe: digits-FID 0.35 -> 0.064 and recall 0.52 ->
                # 0.84 at 1,500 steps, GAN-test accuracy 99.1 -> 98.6 % (benchmarks/cgan_digits.py).
                out["stab"] = {"r1_gamma": 1.0}
        if loss == "wgan-gp":  # Gulrajani 2017, Alg. 1; batch norm breaks the per-sample penalty
            out.setdefault("net", {})["d_norm"] = "layer"
            out["train"].update(n_dis=5, beta1=0.0, beta2=0.9, g_lr=1e-4, d_lr=1e-4)
        elif loss == "wgan":
            out["train"].update(n_dis=5, g_lr=5e-5, d_lr=5e-5)
        return out

    def build(self) -> tuple[nn.Module, nn.Module]:
        K, n = self.spec.n_classes, self.net
        if self.spec.kind == "image":
            if self.spec.shape[1] != self.spec.shape[2]:
                raise ConfigError(f"cgan needs square images, got {self.spec.shape[1]}x{self.spec.shape[2]}")
            G: nn.Module = ImageGenerator(n, self.spec.shape, K)
            features, n_features = dcgan_features(n, self.d_shape)
        else:
            G = PointsGenerator(n, self.spec.shape, K)
            features, n_features = mlp_features(math.prod(self.d_shape), n.d_hidden, n.d_layers), n.d_hidden
        s = self.stab
        D = ProjectionDiscriminator(features, n_features, K, s.pac, s.mbstd, s.mbdisc)
        if self.spec.kind == "image":
            dcgan_init(G)
            dcgan_init(D)
        return G, D

    def generate(self, G: nn.Module, z: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ConfigError("model 'cgan' is class-conditional: it needs one class label per sample")
        return G(z, y)

    # --- losses: the shared ones with the labels bound, and the two hooks that read D's parts ---

    def d_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        return super().d_loss(G, Given(D, batch["y"]), batch, gen)  # fakes for batch["y"] (d_inputs)

    def d_reg_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        return super().d_reg_loss(G, Given(D, batch["y"]), batch, gen)

    def d_args(self, x: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """D(x, y): the shared G phase and unrolled look-ahead score x with the batch's labels."""
        return (x, batch["y"])

    def d_logits(
        self, D: nn.Module, h: Tensor, batch: dict[str, Tensor], params: dict[str, Tensor] | None = None
    ) -> Tensor:
        return d_score(D, h, batch["y"], params)
