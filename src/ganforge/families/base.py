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

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..config import Config
from ..data import BatchSampler, Dataset
from ..errors import ConfigError
from ..losses import LOSSES, AdversarialLoss, gradient_penalty, r1_penalty
from ..nn import Discriminator, apply_spectral_norm, diff_augment
from ..registry import Registry

Stats = dict[str, Tensor]


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about the data to build its networks (saved with the run)."""

    kind: str  # "image" | "points"
    shape: tuple[int, ...]  # one example: (C, H, W) or (D,)
    n_classes: int = 0  # 0 = unlabelled
    # Points only: the mean per-dimension variance of the data, so that recipes can scale
    # scale-dependent settings (R1's gamma). Not part of equality: the same data, resumed, matches.
    variance: float = field(default=0.0, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "shape": list(self.shape), "n_classes": self.n_classes}
        return {**d, "variance": self.variance} if self.variance else d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(
            kind=str(d["kind"]),
            shape=tuple(int(s) for s in d["shape"]),
            n_classes=int(d.get("n_classes", 0)),
            variance=float(d.get("variance", 0.0)),
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
        self.stab = cfg.stab
        self.progress = 0.0  # fraction of the annealing horizon done; the engine updates it
        # With one D step per G step, D can train on the fakes G made in the previous G phase, as
        # PyTorch-GAN's and the DCGAN reference scripts do: each step then costs one G forward less.
        # Conditional families pair fakes with the current batch's labels, so they keep the plain schedule.
        self.reuse_fakes = cfg.train.reuse_fakes and cfg.train.n_dis == 1 and not self.conditional
        self.d_optimizer: torch.optim.Optimizer | None = None  # set by the engine; the look-ahead replays it
        self.cached_fakes: dict[str, Tensor] = {}  # {"x": (B, ...)} from the last G phase
        self.fused_d_pass = False  # one D pass on real + fake batches; set by networks()
        if cfg.train.batch_size % self.stab.pac:
            raise ConfigError(
                f"train.batch_size ({cfg.train.batch_size}) must be a multiple of stab.pac ({self.stab.pac})"
            )
        if self.stab.label_smoothing and not self.loss.smoothable:
            raise ConfigError(
                f"stab.label_smoothing applies to the minimax, ns and lsgan losses, not {self.loss.name!r}"
            )

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

    # --- stabilisers shared by every family ----------------------------------------------------

    def networks(self) -> tuple[nn.Module, nn.Module]:
        """`build()` plus the configured spectral normalisation: what the engine trains."""
        G, D = self.build()
        if self.stab.spectral_norm:
            apply_spectral_norm(D)
        if self.stab.g_spectral_norm:
            apply_spectral_norm(G)
        # Decided once here, not per D phase; conditional D(x, y) pairs each example with its label.
        self.fused_d_pass = not self.conditional and batch_independent(D)
        return G, D

    @property
    def d_shape(self) -> tuple[int, ...]:
        """Shape of one D input: PacGAN stacks `pac` samples along the first axis (channels)."""
        first, *rest = self.spec.shape
        return (first * self.stab.pac, *rest)

    def make_discriminator(self, features: nn.Module, n_features: int) -> Discriminator:
        """Wrap a family's feature extractor (built for `d_shape` inputs) with the stabiliser
        layers and the linear head."""
        return Discriminator(features, n_features, self.stab.pac, self.stab.mbstd, self.stab.mbdisc)

    def d_view(self, x: Tensor, gen: torch.Generator) -> Tensor:
        """What D sees of a batch: DiffAugment, then instance noise annealed linearly to zero
        over training (Sonderby et al. 2017, Sec. 3.1; Arjovsky & Bottou 2017)."""
        if self.stab.diffaug and x.dim() == 4:
            x = diff_augment(x, self.stab.diffaug, gen)
        if self.stab.instance_noise:
            sigma = self.stab.instance_noise * max(0.0, 1.0 - self.progress)
            x = x + sigma * torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=gen)
        return x

    # --- losses (called by the engine's D and G phases) -----------------------------------------

    def d_inputs(self, G: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """What D compares in its phase: the real batch and a generated one, as D sees them."""
        real = batch["x"]
        fake = self.take_cached_fakes(real.shape[0])
        if fake is None:
            with torch.no_grad():
                fake = self.generate(G, self.sample_z(real.shape[0], real.device, gen), batch.get("y"))
        return self.d_view(real, gen), self.d_view(fake, gen)

    def cache_fakes(self, fake: Tensor, **extra: Tensor | None) -> None:
        """Keep the G phase's fakes (detached) for the next D phase when `reuse_fakes` is on, with
        whatever else describes them (`extra`, e.g. a conditional vector; None values are left out)."""
        if self.reuse_fakes:
            self.cached_fakes = {"x": fake.detach(), **{k: v for k, v in extra.items() if v is not None}}

    def take_cached(self, n: int) -> dict[str, Tensor]:
        """The cached fakes and their extras (used once), or {} when there are none of batch size n."""
        cached, self.cached_fakes = self.cached_fakes, {}
        x = cached.get("x")
        return cached if x is not None and x.shape[0] == n else {}

    def take_cached_fakes(self, n: int) -> Tensor | None:
        """The cached fakes (used once), or None when there are none of batch size n."""
        return self.take_cached(n).get("x")

    def d_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        real_in, fake_in = self.d_inputs(G, batch, gen)
        real_out, fake_out = self.d_outputs(D, real_in, fake_in)
        loss = self.loss.d_loss(real_out, fake_out, **self.smoothing())
        stats: Stats = {"Loss/D": loss.detach()}
        if self.loss.gradient_penalty:  # one gradient norm per D output (a PacGAN pack counts as one)
            gp = gradient_penalty(D, real_in, fake_in, generator=gen)
            loss = loss + self.cfg.loss.gp_lambda * gp
            stats["Loss/D_gp"] = gp.detach()
        stats.update(self.d_output_stats(real_out, fake_out))
        return loss, stats

    def second_order(self) -> str:
        """What in this config differentiates D's input gradient or its update ("" if nothing):
        these need a double backward through D, which rules out compiling D."""
        stab = self.stab
        names = [
            name
            for name, on in (
                ("R1", stab.r1_gamma),
                ("R2", stab.r2_gamma),
                ("the gradient penalty", self.loss.gradient_penalty),
                ("the unrolled look-ahead", stab.unrolled_steps),
            )
            if on
        ]
        return " and ".join(names)

    def smoothing(self) -> dict[str, float]:
        """Keyword arguments of D's loss: the one-sided label-smoothing target, when set."""
        return {"real_target": 1.0 - self.stab.label_smoothing} if self.stab.label_smoothing else {}

    def d_outputs(self, D: nn.Module, real_in: Tensor, fake_in: Tensor) -> tuple[Tensor, Tensor]:
        """D's logits on the real and the fake batch. When nothing in D mixes examples (no batch
        norm, minibatch features or spectral-norm power iteration, whose state each pass moves)
        both go through one pass on the concatenated batch: the same maths, half the launches."""
        if self.fused_d_pass and real_in.shape == fake_in.shape:
            real_out, fake_out = D(torch.cat([real_in, fake_in])).flatten().chunk(2)
            return real_out, fake_out
        return D(real_in).flatten(), D(fake_in).flatten()

    def d_reg_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        """The lazy regularisation phase: gamma/2 * (R1 on real data + R2 on generated data)."""
        loss, stats = torch.zeros((), device=batch["x"].device), {}
        if self.stab.r1_gamma:
            r1 = r1_penalty(D, self.d_view(batch["x"], gen))
            loss = loss + 0.5 * self.stab.r1_gamma * r1
            stats["Loss/D_r1"] = r1.detach()
        if self.stab.r2_gamma:
            with torch.no_grad():
                fake = self.generate(
                    G, self.sample_z(batch["x"].shape[0], batch["x"].device, gen), batch.get("y")
                )
            r2 = r1_penalty(D, self.d_view(fake, gen))
            loss = loss + 0.5 * self.stab.r2_gamma * r2
            stats["Loss/D_r2"] = r2.detach()
        return loss, stats

    def g_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        real = batch["x"]
        fake = self.generate(G, self.sample_z(real.shape[0], real.device, gen), batch.get("y"))
        self.cache_fakes(fake)
        fake_in = self.d_view(fake, gen)
        params = real_in = None
        if self.stab.unrolled_steps:
            real_in = self.d_view(real, gen)
            params = self.unrolled_params(D, real_in, fake_in, batch)
        if params is None and not self.stab.feature_matching:
            fake_out = D(*self.d_args(fake_in, batch)).flatten()
        else:
            h_fake = d_features(D, fake_in, params)
            fake_out = self.d_logits(D, h_fake, batch, params)
        loss = self.loss.g_loss(fake_out)
        stats: Stats = {"Loss/G": loss.detach()}
        if params is not None:
            loss = loss + self.unrolled_real_term(D, real_in, batch, params)
        if self.stab.feature_matching:
            with torch.no_grad():
                h_real = d_features(D, self.d_view(real, gen), params)
            fm = (h_real.mean(0) - h_fake.mean(0)).pow(2).sum()
            loss = loss + self.stab.feature_matching * fm
            stats["Loss/G_fm"] = fm.detach()
        return loss, stats

    def unrolled_params(
        self, D: nn.Module, real_in: Tensor, fake_in: Tensor, batch: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """D's parameters after `unrolled_steps` differentiable steps of D's own optimiser on its
        loss (Metz et al. 2017, Eq. 4-7): G's update then anticipates how D would respond. As in
        the paper's code, the look-ahead replays Adam with D's learning rate, betas and current
        moment estimates, on this G phase's batch. The fakes keep their graph, so G's gradient
        includes the d(theta_D^K)/d(theta_G) term."""
        named = list(D.named_parameters())
        lr, beta1, beta2, eps, weight_decay = self.look_ahead_hyperparameters()
        # D's parameters as one flat vector: one gradient and one Adam update per look-ahead step,
        # and a parameter the loss does not reach simply gets a zero gradient.
        flat = torch.cat([p.detach().reshape(-1) for _, p in named]).requires_grad_(True)
        moments = adam_moments(self.d_optimizer, [p for _, p in named])
        buffers = {k: b.clone() for k, b in D.named_buffers()}  # look-ahead must not move BN statistics
        for _ in range(self.stab.unrolled_steps):
            state = {**unflatten(flat, named), **buffers}
            if self.fused_d_pass and real_in.shape == fake_in.shape:  # as in d_outputs
                both = torch.func.functional_call(D, state, (torch.cat([real_in, fake_in]),))
                real_out, fake_out = both.flatten().chunk(2)
            else:
                real_out = torch.func.functional_call(D, state, self.d_args(real_in, batch)).flatten()
                fake_out = torch.func.functional_call(D, state, self.d_args(fake_in, batch)).flatten()
            loss = self.loss.d_loss(real_out, fake_out, **self.smoothing())
            (grad,) = torch.autograd.grad(loss, flat, create_graph=True)
            if weight_decay:
                grad = grad + weight_decay * flat
            flat, moments = adam_look_ahead(flat, grad, moments, lr, beta1, beta2, eps)
        return {**unflatten(flat, named), **buffers}

    def unrolled_real_term(
        self,
        D: nn.Module,
        real_in: Tensor,
        batch: dict[str, Tensor],
        params: dict[str, Tensor],
    ) -> Tensor:
        """The real-data half of G's unrolled objective. Metz et al.'s surrogate (Eq. 5)
        f_K(theta_G, theta_D) = f(theta_G, theta_D^K) is the whole value function at the look-ahead
        parameters, so its E_x[log D(x)] part depends on theta_G through theta_D^K: G also pushes
        D's loss on real data up. With the minimax loss, G's loss is then exactly -L_D there."""
        real_out = self.d_logits(D, d_features(D, real_in, params), batch, params)
        # D's losses add a real and a fake half: with constant fake logits the fake half is a constant
        return -self.loss.d_loss(real_out, torch.zeros_like(real_out), **self.smoothing())

    def look_ahead_hyperparameters(self) -> tuple[float, float, float, float, float]:
        """(lr, beta1, beta2, eps, weight_decay) of D's optimiser, or of the configured one
        when no optimiser is attached (a family used outside the engine)."""
        if self.d_optimizer is None:
            t = self.cfg.train
            return t.d_lr, t.beta1, t.beta2, 1e-8, 0.0
        group = self.d_optimizer.param_groups[0]
        lr = float(group["lr"])  # a tensor learning rate would otherwise join the graph
        return lr, *map(float, group["betas"]), float(group["eps"]), float(group["weight_decay"])

    def d_args(self, x: Tensor, batch: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """D's inputs for examples x of `batch`: x alone here; conditional families add the labels."""
        return (x,)

    def d_logits(
        self, D: nn.Module, h: Tensor, batch: dict[str, Tensor], params: dict[str, Tensor] | None = None
    ) -> Tensor:
        """D's logits (B / pac,) from its features h, optionally under unrolled parameters."""
        return d_head(D, h, params)

    def d_output_stats(self, real_out: Tensor, fake_out: Tensor) -> Stats:
        """Mean D(x) and D(G(z)): probabilities for logit losses, raw critic values otherwise."""
        if self.loss.probabilistic:
            real_out, fake_out = torch.sigmoid(real_out), torch.sigmoid(fake_out)
        return {"D/real": real_out.detach().mean(), "D/fake": fake_out.detach().mean()}


def adam_moments(opt: torch.optim.Optimizer | None, params: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Adam's first moments, second moments and steps taken for `params`, each flattened and
    concatenated in order (zeros for a parameter the optimiser has not stepped yet)."""
    ms, vs, steps = [], [], []
    for p in params:
        state = opt.state.get(p, {}) if opt is not None else {}
        stepped = "exp_avg" in state
        ms.append(state["exp_avg"].detach().reshape(-1) if stepped else p.new_zeros(p.numel()))
        vs.append(state["exp_avg_sq"].detach().reshape(-1) if stepped else p.new_zeros(p.numel()))
        steps.append(p.new_full((p.numel(),), float(state["step"]) if stepped else 0.0))
    return torch.cat(ms), torch.cat(vs), torch.cat(steps)


def unflatten(flat: Tensor, named: list[tuple[str, Tensor]]) -> dict[str, Tensor]:
    """Views of a flat vector shaped as the named parameters, in order."""
    views = flat.split([p.numel() for _, p in named])
    return {k: v.view(p.shape) for (k, p), v in zip(named, views)}


def adam_look_ahead(
    p: Tensor,
    g: Tensor,
    moments: tuple[Tensor, Tensor, Tensor],
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """One differentiable Adam step (Kingma & Ba 2015, Alg. 1): (new p, new moments). The
    denominator is sqrt(v_hat + eps^2) rather than sqrt(v_hat) + eps: equal to within eps, and
    smooth where v_hat = 0 (a dead unit), where sqrt's derivative would be infinite."""
    m, v, step = moments
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    step += 1
    m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
    return p - lr * m_hat / (v_hat + eps * eps).sqrt(), (m, v, step)


def batch_independent(D: nn.Module) -> bool:
    """Whether D scores each example on its own (and holds no state a forward pass updates)."""
    if not isinstance(D, Discriminator) or len(D.extras):
        return False
    for m in D.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or nn.utils.parametrize.is_parametrized(m):
            return False
    return True


def d_features(D: Discriminator, x: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
    """D's penultimate features (B / pac, F), optionally under substituted (unrolled) parameters."""
    if params is None:
        return D.forward_features(x)
    return torch.func.functional_call(D.features, strip(params, "features."), (D.pack(x),)).flatten(1)


def d_head(D: nn.Module, h: Tensor, params: dict[str, Tensor] | None = None) -> Tensor:
    """D's logits from its features: stabiliser extras, then the linear head."""
    if params is None:
        return D.head(D.extras(h)).squeeze(1)
    h = torch.func.functional_call(D.extras, strip(params, "extras."), (h,))
    return torch.func.functional_call(D.head, strip(params, "head."), (h,)).squeeze(1)


def strip(params: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


FAMILIES: Registry[type[Family]] = Registry("model")
