"""The family contract: what varies between GANs (networks, losses, default recipe).

The engine knows nothing about architectures. It asks a :class:`Family` to build its
generator side ``G`` and discriminator side ``D`` (either may be a composite module), and
calls :meth:`Family.d_loss` and :meth:`Family.g_loss` in its D and G phases. Losses only
compute; the engine owns backward, optimiser steps and ``requires_grad`` toggling.

The default implementation here is the unconditional noise-to-data GAN of Goodfellow et al.
(2014): ``x_fake = G(z)``, ``z ~ N(0, I)``, scored by ``D`` under the configured adversarial
loss. Families that differ (conditional, paired translation, ...) override the hooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import Config
from ..data import BatchSampler, Dataset
from ..errors import ConfigError
from ..losses import LOSSES, AdversarialLoss, gradient_penalty
from ..registry import Registry

Stats = dict[str, Tensor]


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about the data to build its networks (saved with the run)."""

    kind: str  # "image" | "points"
    shape: tuple[int, ...]  # one example: (C, H, W) or (D,)
    n_classes: int = 0  # 0 = unlabelled

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "n_classes": self.n_classes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(
            kind=str(d["kind"]), shape=tuple(int(s) for s in d["shape"]), n_classes=int(d.get("n_classes", 0))
        )


class Family:
    """Base class of a GAN family. Subclasses set `name`, `Config`, `data_kinds` and `build`."""

    name: ClassVar[str]
    Config: ClassVar[type]  # the family's network config dataclass (the run config's `net` section)
    data_kinds: ClassVar[tuple[str, ...]] = ("image",)
    conditional: ClassVar[bool] = False  # G and D take class labels y
    tiny: ClassVar[dict[str, Any]] = {}  # net overrides for a tiny, fast model (tests)
    description: ClassVar[str] = ""

    def __init__(self, cfg: Config, spec: DataSpec) -> None:
        if spec.kind not in self.data_kinds:
            raise ConfigError(
                f"model {self.name!r} trains on {' or '.join(self.data_kinds)} data, but the data is {spec.kind!r}"
            )
        self.cfg = cfg
        self.net = cfg.net
        self.spec = spec
        self.loss: AdversarialLoss = LOSSES.get(cfg.loss.name)

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        """Run-config overrides (nested dict) that suit this family on this data. The user's
        config file and `--set` overrides still win."""
        return {}

    def build(self) -> tuple[nn.Module, nn.Module]:
        """(G, D), freshly initialised (the engine seeds the RNG around this call)."""
        raise NotImplementedError

    def make_sampler(self, data: Dataset, batch_size: int, seed: int) -> BatchSampler:
        """The engine's source of real batches; override for e.g. CTGAN's training-by-sampling.
        Whatever it returns needs `next_batch(data)`, `state_tensors()` and `load_state_tensors()`."""
        return BatchSampler(len(data), batch_size, seed)

    # --- sampling -------------------------------------------------------------------------

    def sample_z(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.net.z_dim, device=device, generator=generator)

    def generate(self, G: nn.Module, z: Tensor, y: Tensor | None = None) -> Tensor:
        return G(z)

    # --- losses (called by the engine's D and G phases) -----------------------------------------

    def d_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        real = batch["x"]
        with torch.no_grad():
            fake = self.generate(G, self.sample_z(real.shape[0], real.device, gen), batch.get("y"))
        real_out, fake_out = D(real).flatten(), D(fake).flatten()
        loss = self.loss.d_loss(real_out, fake_out)
        stats: Stats = {"Loss/D": loss.detach()}
        if self.loss.gradient_penalty:
            gp = gradient_penalty(D, real, fake, generator=gen)
            loss = loss + self.cfg.loss.gp_lambda * gp
            stats["Loss/D_gp"] = gp.detach()
        stats.update(self.d_output_stats(real_out, fake_out))
        return loss, stats

    def g_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        n = batch["x"].shape[0]
        fake = self.generate(G, self.sample_z(n, batch["x"].device, gen), batch.get("y"))
        fake_out = D(fake).flatten()
        loss = self.loss.g_loss(fake_out)
        return loss, {"Loss/G": loss.detach()}

    def d_output_stats(self, real_out: Tensor, fake_out: Tensor) -> Stats:
        """Mean D(x) and D(G(z)): probabilities for logit losses, raw critic values otherwise."""
        if self.loss.probabilistic:
            real_out, fake_out = torch.sigmoid(real_out), torch.sigmoid(fake_out)
        return {"D/real": real_out.detach().mean(), "D/fake": fake_out.detach().mean()}


FAMILIES: Registry[type[Family]] = Registry("model")
