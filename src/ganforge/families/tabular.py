"""CTGAN: the conditional tabular GAN of Xu et al. (2019), on the shared engine.

"Modeling Tabular Data using Conditional GAN" (NeurIPS 2019):
- G (Sec. 4.4): z (+ conditional vector c) -> residual blocks h_{i+1} = h_i (+) ReLU(BN(FC(h_i)))
  -> a linear layer whose spans are activated per column: tanh for each alpha, Gumbel-softmax
  (tau = 0.2, Jang et al. 2017) for each mode or category one-hot.
- D: a PacGAN critic (Lin et al. 2018): `pac` rows are concatenated and judged together
  (the shared `stab.pac` packing, 10 in CTGAN); FC -> LeakyReLU(0.2) -> Dropout(0.5) blocks,
  trained as WGAN-GP (Gulrajani et al. 2017) with one gradient norm per pack.
- Conditional vector and training-by-sampling (Sec. 4.3): pick a discrete column uniformly, a
  category with probability ~ log(1 + frequency), and a real row that has it; G's loss adds the
  cross-entropy between the chosen category and G's logits for that column (Eq. in Sec. 4.3).

All span operations are vectorised: softmax spans are padded into a few (B, S, K) blocks by
width bucket, so the cost per step does not grow with the number of columns in Python.

The table layout reaches the networks through the config: `net.spans` (G's output blocks,
"tanh:1" / "softmax:K") and `net.cond_spans` (the spans forming c), filled by
:mod:`ganforge.tabular` from the fitted transformer. Data kind: "table".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset
from ..errors import ConfigError
from .base import FAMILIES, DataSpec, Family, Stats


@dataclass
class TabularConfig:
    z_dim: int = 128  # noise dimension (CTGAN's embedding_dim)
    g_dims: list[int] = field(default_factory=lambda: [256, 256])  # widths of G's residual blocks
    d_dims: list[int] = field(default_factory=lambda: [256, 256])  # widths of D's hidden layers
    dropout: float = 0.5  # dropout after each of D's hidden layers
    tau: float = 0.2  # Gumbel-softmax temperature
    log_frequency: bool = True  # training-by-sampling draws categories ~ log(1 + count), else ~ count
    spans: list[str] = field(default_factory=list)  # G's output blocks "tanh:1"/"softmax:K" (empty: all tanh)
    cond_spans: list[int] = field(
        default_factory=list
    )  # indices of the spans that form the conditional vector

    def validate(self) -> None:
        if self.z_dim < 1:
            raise ConfigError(f"net.z_dim must be at least 1, got {self.z_dim}")
        if any(d < 1 for d in [*self.g_dims, *self.d_dims]):
            raise ConfigError("net.g_dims and net.d_dims must be positive widths")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"net.dropout must lie in [0, 1), got {self.dropout}")
        if not self.tau > 0:
            raise ConfigError(f"net.tau must be positive, got {self.tau}")
        for s in self.spans:
            act, _, width = s.partition(":")
            if act not in ("tanh", "softmax") or not width.isdigit() or int(width) < 1:
                raise ConfigError(f"net.spans: {s!r} is not tanh:N or softmax:N")
        for i in self.cond_spans:
            if not 0 <= i < len(self.spans) or not self.spans[i].startswith("softmax"):
                raise ConfigError(f"net.cond_spans: {i} is not the index of a softmax span")


class Layout:
    """Index tensors for the vectorised span activations and the conditional cross-entropy."""

    def __init__(self, spans: list[str], cond_spans: list[int], width: int) -> None:
        spans = spans or ["tanh:1"] * width
        widths = [int(s.split(":")[1]) for s in spans]
        if sum(widths) != width:
            raise ConfigError(f"net.spans cover {sum(widths)} values but the table is encoded in {width}")
        starts = [sum(widths[:i]) for i in range(len(widths))]
        self.width = width
        tanh = [p for s, a, w in zip(starts, spans, widths) if a.startswith("tanh") for p in range(s, s + w)]
        self.tanh = torch.tensor(tanh, dtype=torch.long)
        # Softmax spans bucketed by width (1, 2, 3-4, 5-8, ...): one padded (B, S, K) softmax per bucket.
        # Padding indexes column `width`, a -inf appended to the logits (probability 0).
        buckets: dict[int, list[int]] = {}
        for i, (a, w) in enumerate(zip(spans, widths)):
            if a.startswith("softmax"):
                buckets.setdefault((w - 1).bit_length(), []).append(i)
        self.buckets: list[tuple[Tensor, Tensor]] = []
        order = list(tanh)
        for _, members in sorted(buckets.items()):
            k = max(widths[i] for i in members)
            idx = torch.full((len(members), k), width, dtype=torch.long)
            for row, i in enumerate(members):
                idx[row, : widths[i]] = torch.arange(starts[i], starts[i] + widths[i])
            valid = (idx.flatten() < width).nonzero().squeeze(1)
            self.buckets.append((idx, valid))
            order += idx.flatten()[valid].tolist()
        self.restore = torch.argsort(torch.tensor(order, dtype=torch.long))  # grouped order -> column order
        # Conditional vector: the one-hots of `cond_spans`, concatenated.
        cw = [widths[i] for i in cond_spans]
        self.cond_dim = sum(cw)
        self.cond_starts = [starts[i] for i in cond_spans]  # in G's output
        self.cond_offsets = [sum(cw[:j]) for j in range(len(cw))]  # in c
        self.cond_widths = cw
        kc = max(cw, default=1)
        self.cond_table = torch.full((len(cw), kc), width, dtype=torch.long)
        for j, (s, w) in enumerate(zip(self.cond_starts, cw)):
            self.cond_table[j, :w] = torch.arange(s, s + w)

    def activate(self, raw: Tensor, tau: float, generator: torch.Generator | None) -> Tensor:
        """tanh on the alphas, Gumbel-softmax(tau) on every one-hot span.  (B, D) -> (B, D)"""
        B = raw.shape[0]
        parts = [torch.tanh(raw[:, self.tanh.to(raw.device)])]
        padded = torch.cat([raw, raw.new_full((B, 1), float("-inf"))], dim=1)
        for idx, valid in self.buckets:
            logits = padded[:, idx.to(raw.device)]  # (B, S, K)
            u = torch.rand(logits.shape, device=raw.device, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
            gumbel = -torch.log(-torch.log(u))
            probs = F.softmax((logits + gumbel) / tau, dim=-1)
            parts.append(probs.reshape(B, -1)[:, valid.to(raw.device)])
        return torch.cat(parts, dim=1)[:, self.restore.to(raw.device)]

    def cond_loss(self, raw: Tensor, col: Tensor, opt: Tensor) -> Tensor:
        """Mean cross-entropy between G's logits for each row's conditioned column and its category."""
        padded = torch.cat([raw, raw.new_full((raw.shape[0], 1), float("-inf"))], dim=1)
        logits = padded.gather(1, self.cond_table.to(raw.device)[col])  # (B, K_max)
        return F.cross_entropy(logits, opt)


class Residual(nn.Module):
    """h -> ReLU(BN(FC(h))) concatenated with h (Xu et al. 2019, Sec. 4.4)."""

    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.fc = nn.Linear(i, o)
        self.bn = nn.BatchNorm1d(o)

    def forward(self, h: Tensor) -> Tensor:
        return torch.cat([F.relu(self.bn(self.fc(h))), h], dim=1)


class ResidualGenerator(nn.Module):
    def __init__(self, in_dim: int, dims: list[int], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d in dims:
            layers.append(Residual(in_dim, d))
            in_dim += d
        layers.append(nn.Linear(in_dim, out_dim))
        self.seq = nn.Sequential(*layers)

    def forward(self, zc: Tensor) -> Tensor:
        return self.seq(zc)  # (B, D) raw: the family applies tanh / Gumbel-softmax per span


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw: the same distribution as nn.Dropout, without its
    per-element Bernoulli sampling (about twice as fast on a CPU for D's small activations)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


def critic_features(in_dim: int, dims: list[int], dropout: float) -> nn.Sequential:
    """D's body on a pack of rows: [FC -> LeakyReLU(0.2) -> Dropout] per hidden width."""
    layers: list[nn.Module] = []
    for h in dims:
        layers += [nn.Linear(in_dim, h), nn.LeakyReLU(0.2), Dropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers)


class TableSampler:
    """Training-by-sampling (Xu et al. 2019, Sec. 4.3), vectorised with torch.

    Each batch: a discrete column per row (uniform), a category (~ log(1 + count)), the
    conditional vector c for G, and real rows having those categories, shuffled against c as
    in the reference implementation (`c_real` goes with `x`). Without discrete columns, rows are
    drawn uniformly with replacement. State: one generator (saved in checkpoints).
    """

    def __init__(self, x: Tensor, layout: Layout, batch_size: int, seed: int, log_frequency: bool) -> None:
        self.n, self.batch_size, self.layout = x.shape[0], batch_size, layout
        self.generator = torch.Generator().manual_seed(seed)
        if not layout.cond_widths:
            return
        xc = x.detach().cpu()
        rows, starts, counts, cdf = [], [], [], []
        kc = max(layout.cond_widths)
        base = 0
        for s, w in zip(layout.cond_starts, layout.cond_widths):
            codes = xc[:, s : s + w].argmax(dim=1)
            count = torch.bincount(codes, minlength=w)
            order = torch.argsort(codes, stable=True)  # rows grouped by category
            rows.append(order.to(torch.int32))
            starts.append(base + torch.cumsum(count, 0) - count)
            counts.append(count)
            freq = torch.log1p(count.double()) if log_frequency else count.double()
            row = torch.ones(kc, dtype=torch.float64)
            row[:w] = torch.cumsum(freq / freq.sum(), 0)
            cdf.append(row)
            base += self.n
        self.rows = torch.cat(rows)  # (n_cond * N,) row ids, grouped by column then category
        self.cat_start = torch.cat(starts)  # (cond_dim,) where each category's rows begin
        self.cat_count = torch.cat(counts)  # (cond_dim,)
        self.cdf = torch.stack(cdf).float()  # (n_cond, K_max) per-column category CDF
        self.offsets = torch.tensor(layout.cond_offsets)
        self.widths = torch.tensor(layout.cond_widths)

    def next_batch(self, data: Dataset) -> dict[str, Tensor]:
        B, g, dev = self.batch_size, self.generator, data.x.device
        if not self.layout.cond_widths:
            return {"x": data.x[torch.randint(self.n, (B,), generator=g).to(dev)]}
        col = torch.randint(len(self.layout.cond_widths), (B,), generator=g)
        u = torch.rand(B, 1, generator=g)
        opt = torch.minimum((self.cdf[col] < u).sum(1), self.widths[col] - 1)
        cat = self.offsets[col] + opt  # (B,) position in c
        c = torch.zeros(B, self.layout.cond_dim).scatter_(1, cat[:, None], 1.0)
        perm = torch.randperm(B, generator=g)
        cat_real = cat[perm]
        pick = (torch.rand(B, generator=g) * self.cat_count[cat_real]).long()
        rows = self.rows[self.cat_start[cat_real] + pick].long()
        return {
            "x": data.x[rows.to(dev)],
            "c": c.to(dev),
            "c_real": c[perm].to(dev),
            "col": col.to(dev),
            "opt": opt.to(dev),
        }

    def state_tensors(self) -> dict[str, Tensor]:
        return {"rng": self.generator.get_state()}

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["rng"])


@FAMILIES.register("tabular")
class Tabular(Family):
    name = "tabular"
    Config = TabularConfig
    data_kinds = ("table",)
    tiny = {"z_dim": 8, "g_dims": [16], "d_dims": [16]}
    description = "CTGAN for tables: mode-specific normalisation, conditional G, PacGAN critic (Xu 2019)"

    def __init__(self, cfg: Any, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        # These stabilisers read D's input as the data alone; here it is the data and c.
        for key in ("r1_gamma", "r2_gamma", "feature_matching", "unrolled_steps"):
            if getattr(self.stab, key):
                raise ConfigError(f"model 'tabular' does not support stab.{key}")
        self.layout = Layout(list(self.net.spans), list(self.net.cond_spans), spec.shape[0])

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        # CTGAN's defaults: WGAN-GP, Adam(2e-4, betas (0.5, 0.9)), batch 500, no weight averaging.
        return {
            "loss": {"name": "wgan-gp"},
            "train": {
                "batch_size": 500,
                "g_lr": 2e-4,
                "d_lr": 2e-4,
                "beta1": 0.5,
                "beta2": 0.9,
                "ema_decay": 0.0,
            },
        }

    def build(self) -> tuple[nn.Module, nn.Module]:
        n = self.net
        G = ResidualGenerator(n.z_dim + self.layout.cond_dim, list(n.g_dims), self.spec.shape[0])
        d_in = (self.spec.shape[0] + self.layout.cond_dim) * self.stab.pac  # a pack of rows and their c
        features = critic_features(d_in, list(n.d_dims), n.dropout)
        return G, self.make_discriminator(features, n.d_dims[-1] if n.d_dims else d_in)

    def make_sampler(self, data: Dataset, batch_size: int, seed: int) -> TableSampler:
        return TableSampler(data.x, self.layout, batch_size, seed, self.net.log_frequency)

    # --- sampling -----------------------------------------------------------------------------------

    def raw(self, G: nn.Module, z: Tensor, c: Tensor | None) -> Tensor:
        if self.layout.cond_dim:
            if c is None:
                c = z.new_zeros(z.shape[0], self.layout.cond_dim)
            z = torch.cat([z, c], dim=1)
        return G(z)

    def generate(
        self, G: nn.Module, z: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Activated rows (B, D); `y` is the conditional vector c (B, cond_dim), zeros when None."""
        return self.layout.activate(self.raw(G, z, y), self.net.tau, generator)

    def with_cond(self, x: Tensor, c: Tensor | None) -> Tensor:
        return x if c is None else torch.cat([x, c], dim=1)

    # --- losses -------------------------------------------------------------------------------------

    def d_inputs(self, G: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Real rows with their own conditional vector, generated rows with the one G was given."""
        real, c = batch["x"], batch.get("c")
        with torch.no_grad():
            fake = self.generate(G, self.sample_z(real.shape[0], real.device, gen), c, gen)
        return self.d_view(self.with_cond(real, batch.get("c_real")), gen), self.d_view(
            self.with_cond(fake, c), gen
        )

    def g_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        c = batch.get("c")  # the last D phase's conditional vector, with a fresh z
        raw = self.raw(G, self.sample_z(batch["x"].shape[0], batch["x"].device, gen), c)
        fake = self.layout.activate(raw, self.net.tau, gen)
        loss = self.loss.g_loss(D(self.d_view(self.with_cond(fake, c), gen)))
        stats: Stats = {"Loss/G": loss.detach()}
        if c is not None:
            ce = self.layout.cond_loss(raw, batch["col"], batch["opt"])
            loss = loss + ce
            stats["Loss/G_cond"] = ce.detach()
        return loss, stats
