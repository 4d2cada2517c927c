"""CTGAN: the conditional tabular GAN of Xu et al. (2019), on the shared engine.

"Modeling Tabular Data using Conditional GAN" (NeurIPS 2019):
- G (Sec. 4.4): z (+ conditional vector c) -> residual blocks h_{i+1} = h_i (+) ReLU(BN(FC(h_i)))
  -> a linear layer whose spans are activated per column: tanh for each alpha, Gumbel-softmax
  (tau = 0.2, Jang et al. 2017) for each mode or category one-hot.
- D: a PacGAN critic (Lin et al. 2018): `pac` rows are concatenated and judged together
  (the shared `stab.pac` packing, 10 in CTGAN); FC -> LeakyReLU(0.2) -> Dropout(0.5) blocks,
  trained as WGAN-GP (Gulrajani et al. 2017) with one gradient norm and, as in CTGAN's reference
  code, one interpolation weight per pack.
- Conditional vector and training-by-sampling (Sec. 4.3): pick a discrete column uniformly, a
  category with probability ~ log(1 + frequency), and a real row that has it; G's loss adds the
  cross-entropy between the chosen category and G's logits for that column (Eq. in Sec. 4.3).

Speed, with the same model and the same distributions as the paper's: all spans are activated at
once (one softmax over a padded grid of spans, no Python loop over columns); G trains over one
buffer of its layers' outputs, each layer reading a suffix of it, with a written-out backward that
never computes the gradient of the noise (:class:`GeneratorPass`); the critic scores real and
fake packs in one pass, written straight into its buffer (:func:`pack_rows`), with the gradient
penalty of the plain MLP critic in closed form and both terms' weight gradients from shared
products (:class:`CriticWithPenalty`).

Differential privacy (``net.dp_noise_multiplier`` > 0): DP-SGD on the critic (Abadi et al. 2016,
Alg. 1) with a pack as the unit. Each step draws `batch_size` rows uniformly without replacement
(:class:`ganforge.tabular.sampling.UniformTableSampler`); each pack's gradient of its critic loss
*including* its gradient penalty is clipped to L2 norm C, the sum is perturbed with
N(0, sigma^2 C^2 I) and averaged (:mod:`ganforge.tabular.privacy`, which also does the accounting).
A row is in one pack per step, so clipping bounds its influence; G sees the data only through the
critic (post-processing).

The table layout reaches the networks through the config: `net.spans` (G's output blocks,
"tanh:1" / "softmax:K") and `net.cond_spans` (the spans forming c), filled by
:mod:`ganforge.tabular` from the fitted transformer. Data kind: "table".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..data import Dataset
from ..errors import ConfigError
from ..losses import gradient_penalty
from ..nn import Discriminator
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
    dp_noise_multiplier: float = 0.0  # DP-SGD sigma on the critic (0 = no privacy; TabularGAN calibrates it)
    dp_max_grad_norm: float = 1.0  # DP-SGD clip C: each pack's critic gradient is scaled to norm <= C
    share_fakes: bool = True  # n_dis=1: the G phase back-propagates through the D phase's rows

    def validate(self) -> None:
        if self.z_dim < 1:
            raise ConfigError(f"net.z_dim must be at least 1, got {self.z_dim}")
        if any(d < 1 for d in [*self.g_dims, *self.d_dims]):
            raise ConfigError("net.g_dims and net.d_dims must be positive widths")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"net.dropout must lie in [0, 1), got {self.dropout}")
        if not self.tau > 0:
            raise ConfigError(f"net.tau must be positive, got {self.tau}")
        if not self.dp_noise_multiplier >= 0 or not self.dp_max_grad_norm > 0:
            raise ConfigError("net.dp_noise_multiplier must be >= 0 and net.dp_max_grad_norm > 0")
        for s in self.spans:
            act, _, width = s.partition(":")
            if act not in ("tanh", "softmax") or not width.isdigit() or int(width) < 1:
                raise ConfigError(f"net.spans: {s!r} is not tanh:N or softmax:N")
        for i in self.cond_spans:
            if not 0 <= i < len(self.spans) or not self.spans[i].startswith("softmax"):
                raise ConfigError(f"net.cond_spans: {i} is not the index of a softmax span")


class Layout:
    """Index tensors for the span activations (all spans at once) and the conditional cross-entropy."""

    def __init__(self, spans: list[str], cond_spans: list[int], width: int) -> None:
        spans = spans or ["tanh:1"] * width
        widths = [int(s.split(":")[1]) for s in spans]
        if sum(widths) != width:
            raise ConfigError(f"net.spans cover {sum(widths)} values but the table is encoded in {width}")
        starts = [sum(widths[:i]) for i in range(len(widths))]
        self.width = width
        # Softmax spans gathered into an (S, K) grid, K the widest span; padding indexes column
        # `width`, a -inf appended to the logits (probability 0). `back` reads the output columns
        # from [the grid's probabilities, flattened | tanh of the alpha columns].
        soft = [(s, w) for a, s, w in zip(spans, starts, widths) if a.startswith("softmax")]
        tanh = [s for a, s in zip(spans, starts) if a.startswith("tanh")]
        self.tanh_cols = torch.tensor(tanh, dtype=torch.long)
        self.n_soft, self.k_max = len(soft), max((w for _, w in soft), default=1)
        grid = torch.full((self.n_soft, self.k_max), width, dtype=torch.long)
        self.back = torch.empty(width, dtype=torch.long)
        for j, (s, w) in enumerate(soft):
            grid[j, :w] = torch.arange(s, s + w)
            self.back[s : s + w] = torch.arange(j * self.k_max, j * self.k_max + w)
        self.back[self.tanh_cols] = torch.arange(len(self.tanh_cols)) + self.n_soft * self.k_max
        self.grid = grid.flatten()
        # Conditional vector: the one-hots of `cond_spans`, concatenated.
        cw = [widths[i] for i in cond_spans]
        self.cond_dim = sum(cw)
        self.cond_starts = [starts[i] for i in cond_spans]  # in G's output
        self.cond_offsets = [sum(cw[:j]) for j in range(len(cw))]  # in c
        self.cond_widths = cw
        kc = max(cw, default=1)
        # Padding indexes column `width`, a -inf appended to the logits (probability 0).
        self.cond_table = torch.full((len(cw), kc), width, dtype=torch.long)
        for j, (s, w) in enumerate(zip(self.cond_starts, cw)):
            self.cond_table[j, :w] = torch.arange(s, s + w)

    def activate(self, raw: Tensor, tau: float, generator: torch.Generator | None) -> Tensor:
        """tanh on the alphas, Gumbel-softmax(tau) on every one-hot span: (B, D) -> (B, D).

        The spans' logits are gathered into a (S, K, B) grid (-inf padding) and normalised by
        one softmax over K: with B innermost that kernel is ~20x faster on a CPU than a softmax
        over a short last dimension, and far cheaper than a scatter-based segment softmax."""
        B, dev = raw.shape[0], raw.device
        u = torch.rand(raw.shape, device=dev, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
        y = (raw - u.log_().neg_().log_()) / tau  # logits + Gumbel(0, 1) noise, over tau
        parts = []
        if self.n_soft:
            y = torch.cat([y, y.new_full((B, 1), float("-inf"))], dim=1).index_select(1, self.grid.to(dev))
            probs = torch.softmax(y.t().reshape(self.n_soft, self.k_max, B), dim=1)
            parts.append(probs.reshape(self.n_soft * self.k_max, B).t())
        if len(self.tanh_cols):
            parts.append(torch.tanh(raw.index_select(1, self.tanh_cols.to(dev))))
        return torch.cat(parts, dim=1).index_select(1, self.back.to(dev))

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
    """`seq` (Residual blocks, then a linear layer) is the network; `forward` computes the same
    function in fewer, larger operations. A layer's input is [h_k, ..., h_1, zc], so

    - training (:class:`GeneratorPass`): every block writes its output into one (B, sum(dims) + k)
      buffer, right to left, and each layer's input is a suffix of that buffer (a strided view): one
      product per layer, no concatenation; the backward is written out, skips the gradient of zc
      (noise and conditional vector) and takes each weight's gradient in one product;
    - otherwise (sampling, autocast, no gradient): each product splits into W_h [h_k..h_1] + W_zc zc,
      so zc is not concatenated into every layer's input."""

    def __init__(self, in_dim: int, dims: list[int], out_dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for d in dims:
            layers.append(Residual(in_dim, d))
            in_dim += d
        layers.append(nn.Linear(in_dim, out_dim))
        self.seq = nn.Sequential(*layers)

    def forward(self, zc: Tensor) -> Tensor:
        *blocks, head = self.seq
        params = [t for b in blocks for t in (b.fc.weight, b.fc.bias, b.bn.weight, b.bn.bias)]
        params += [head.weight, head.bias]  # read once (a parametrised weight is recomputed on each read)
        if (
            self.training
            and torch.is_grad_enabled()
            and zc.shape[0] > 1  # BatchNorm's error for one row in training comes from the split path
            and not autocast_enabled(zc.device.type)
            and all(b.bn.affine and b.bn.track_running_stats for b in blocks)
        ):
            return GeneratorPass.apply(zc, blocks, *params)
        k = zc.shape[1]
        h: Tensor | None = None  # [h_i, ..., h_1]: the block outputs so far, newest first
        for i, block in enumerate(blocks):
            W, b = params[4 * i], params[4 * i + 1]
            a = F.linear(zc, W[:, -k:], b)
            if h is not None:
                a = torch.addmm(a, h, W[:, :-k].t())
            r = F.relu(block.bn(a))
            h = r if h is None else torch.cat([r, h], dim=1)
        W, b = params[-2], params[-1]
        out = F.linear(zc, W[:, -k:], b)
        return out if h is None else torch.addmm(out, h, W[:, :-k].t())  # (B, D) raw, as seq(zc)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for `device_type` (torch 2.4's signature, or the older per-device calls)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class GeneratorPass(torch.autograd.Function):
    """:class:`ResidualGenerator`'s training pass (batch statistics) over one buffer
    X = [h_n, ..., h_1, zc]: block i reads the suffix [h_{i-1}, ..., h_1, zc] and writes
    h_i = ReLU(BN(W_i [h_{i-1}..zc] + b_i)) just before it; the head reads all of X. BatchNorm's
    running statistics are updated as nn.BatchNorm1d updates them.

    Backward, top down: dW = dA^T X_suffix (one product per weight, in the weight's own (out, in)
    layout: no slice gradients to zero-fill and add), and the gradient of the h columns of X accumulates in one buffer
    G_X += dA W_h; zc's columns only when zc needs a gradient. BatchNorm and ReLU use ATen's own
    backward kernels, so this is autograd's arithmetic with fewer, larger operations."""

    @staticmethod
    def forward(ctx: Any, zc: Tensor, blocks: list[Residual], *params: Tensor) -> Tensor:  # type: ignore[override]
        B, k = zc.shape
        widths = [b.fc.out_features for b in blocks]
        X = zc.new_empty(B, sum(widths) + k)
        start = X.shape[1] - k  # where the current layer's input begins
        X[:, start:] = zc
        saved = []
        for i, block in enumerate(blocks):
            W, b, gamma, beta = params[4 * i : 4 * i + 4]
            bn = block.bn
            a = torch.addmm(b, X[:, start:], W.t())
            momentum = bn.momentum
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if momentum is None:  # nn.BatchNorm's cumulative average
                    momentum = 1.0 / float(bn.num_batches_tracked)
            y, mean, invstd = torch.native_batch_norm(
                a, gamma, beta, bn.running_mean, bn.running_var, True, momentum, bn.eps
            )
            start -= widths[i]
            torch.clamp_min(y, 0.0, out=X[:, start : start + widths[i]])
            saved += [a, mean, invstd]
        out = torch.addmm(params[-1], X, params[-2].t())
        ctx.save_for_backward(X, *params, *saved)
        ctx.layout = (widths, k, [b.bn.eps for b in blocks])
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        widths, k, eps = ctx.layout
        n = len(widths)
        X, *rest = ctx.saved_tensors
        params, saved = rest[: 4 * n + 2], rest[4 * n + 2 :]
        need_zc = ctx.needs_input_grad[0]
        total = X.shape[1]
        end = total if need_zc else total - k  # the columns of X whose gradient is needed
        grads: list[Tensor | None] = [None] * len(params)
        GX = grad.new_empty(grad.shape[0], total)
        W_head = params[-2]
        grads[-2], grads[-1] = grad.t() @ X, grad.sum(0)
        torch.mm(grad, W_head[:, :end], out=GX[:, :end])
        start = 0
        for i in range(n - 1, -1, -1):
            W, _, gamma, _ = params[4 * i : 4 * i + 4]
            a, mean, invstd = saved[3 * i : 3 * i + 3]
            d = widths[i]
            h, in_start = X[:, start : start + d], start + d
            dA = torch.ops.aten.threshold_backward(GX[:, start : start + d], h, 0.0)
            dA, d_gamma, d_beta = torch.ops.aten.native_batch_norm_backward(
                dA, a, gamma, None, None, mean, invstd, True, eps[i], [True, True, True]
            )
            grads[4 * i : 4 * i + 4] = [dA.t() @ X[:, in_start:], dA.sum(0), d_gamma, d_beta]
            if end > in_start:
                GX[:, in_start:end].addmm_(dA, W[:, : end - in_start])
            start = in_start
        return (GX[:, total - k :] if need_zc else None, None, *grads)


def keep_masks(shapes: list[tuple[int, int]], p: float, like: Tensor) -> list[Tensor]:
    """Inverted-dropout masks of the given (rows, width) shapes in `like`'s dtype and device, from
    one draw of the global RNG: 1 / (1 - p) with probability 1 - p, else 0. For p = 1/2 (CTGAN's
    rate) each random integer gives 16 fair coin flips (its 16 low bits, exactly uniform): the same
    distribution, ~4x faster on a CPU than one uniform draw per element, which itself is ~2x faster
    than nn.Dropout. One draw for all of a phase's masks saves a few small ops per layer."""
    sizes = [rows * width for rows, width in shapes]
    n, dev = sum(sizes), like.device
    if p != 0.5:
        flat = (torch.rand(n, device=dev) >= p).to(like.dtype).div_(1.0 - p)
    else:
        words = torch.randint(0, 1 << 16, ((n + 15) // 16, 1), dtype=torch.int32, device=dev)
        bits = (words >> torch.arange(16, dtype=torch.int32, device=dev)) & 1
        flat = bits.flatten()[:n].to(like.dtype).mul_(2.0)
    return [m.view(shape) for m, shape in zip(flat.split(sizes), shapes)]


def keep_mask(rows: int, width: int, p: float, like: Tensor) -> Tensor:
    """One (rows, width) mask as :func:`keep_masks` draws it."""
    return keep_masks([(rows, width)], p, like)[0]


class Dropout(nn.Module):
    """Inverted dropout with :func:`keep_mask`'s draw: the same distribution as nn.Dropout."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return x * keep_mask(x.shape[0], x.shape[1], self.p, x)


def critic_features(in_dim: int, dims: list[int], dropout: float) -> nn.Sequential:
    """D's body on a pack of rows: [FC -> LeakyReLU(0.2) -> Dropout] per hidden width."""
    layers: list[nn.Module] = []
    for h in dims:
        layers += [nn.Linear(in_dim, h), nn.LeakyReLU(0.2), Dropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers)


# --- the critic's gradient penalty in closed form ----------------------------------------------------


def leaky_gate(m: Tensor, a: Tensor, slope: float) -> Tensor:
    """m * LeakyReLU'(a): m where a > 0, else slope * m (one fused kernel: the activation's own
    backward, ~6x faster on a CPU than torch.where)."""
    return torch.ops.aten.leaky_relu_backward(m, a, slope, False)


class CriticWithPenalty(torch.autograd.Function):
    """The D phase of the plain MLP critic D(x) = w^T g_L(... g_1(x)), g_l(h) = m_l * LeakyReLU(W_l h
    + b_l) (m_l a dropout mask): its logits on the packs (real, then fake) and WGAN-GP's
    E[(||grad_x D(x_hat)||_2 - 1)^2] (Gulrajani et al. 2017, Eq. 3) on x_hat = eps real + (1 - eps)
    fake, in closed form and one Function.

    Penalty: with gate_l = m_l * LeakyReLU'(a_l) (piecewise constant in the weights), the input
    gradient is linear in each weight: delta_L = w * gate_L, delta_l = (delta_{l+1} W_{l+1}) * gate_l,
    grad_x = delta_1 W_1. With u = dGP/dgrad_x, v_1 = u and v_{l+1} = (v_l W_l^T) * gate_l, its
    weight gradients are delta_l^T v_l and, for w, the sum of (v_L W_L^T) * gate_L — autograd's
    double backward in fewer, larger products and no stored graph. The first layer is linear, so
    its pre-activations at x_hat are the same interpolation of those at the packs: no pass of
    its own through W_1.

    Logits: h_l = a_l * gate_l; the loss's pre-activation gradients are dA_L = (dL/dout w) * gate_L
    and dA_l = (dA_{l+1} W_{l+1}) * gate_l. Each weight's gradient from both terms comes from one
    product, [dA_l ; delta_l]^T [h_{l-1} ; v_l], where autograd makes two and adds them; the first
    layer's (an H_1 x I result from a short inner dimension) is the D phase's costliest product.
    Float32 throughout, under train.amp too (:func:`critic_with_penalty` turns autocast off).
    `packs` is (P + P/2, I): the P packs, then P/2 rows this Function overwrites with v_1 (the
    first fused product's right operand, so the packs are not copied)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        packs: Tensor,
        eps: Tensor,
        slope: float,
        masks: list[Tensor],
        gp_masks: list[Tensor],
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        n = len(params) // 2 - 1
        Ws, bs, head_w, head_b = params[0 : 2 * n : 2], params[1 : 2 * n : 2], params[-2], params[-1]
        Q = packs.shape[0] // 3
        P = 2 * Q
        # The fused products' operands, [loss rows (P) ; penalty rows (Q)], filled in place.
        lefts = [packs.new_empty(P + Q, W.shape[0]) for W in Ws]  # [dA_l ; delta_l]
        rights = [packs, *(packs.new_empty(P + Q, W.shape[1]) for W in Ws[1:])]  # [h_{l-1} ; v_l]
        gates = []
        for i, (W, b, m) in enumerate(zip(Ws, bs, masks)):
            a = torch.addmm(b, rights[i][:P], W.t())
            if i == 0:
                a_hat = torch.lerp(a[Q:], a[:Q], eps)  # the interpolates' first pre-activations
            gates.append(leaky_gate(m, a, slope))
            h = rights[i + 1][:P] if i + 1 < n else torch.empty_like(a)
            torch.mul(a, gates[-1], out=h)  # m * LeakyReLU(a)
        out = torch.addmm(head_b, h, head_w.t()).squeeze(1)
        gp_gates = []
        for i, m in enumerate(gp_masks):  # the interpolates' own dropout masks
            gp_gates.append(leaky_gate(m, a_hat, slope))
            if i + 1 < n:
                a_hat = torch.addmm(bs[i + 1], a_hat * gp_gates[-1], Ws[i + 1].t())
        torch.mul(head_w, gp_gates[-1], out=lefts[-1][P:])
        for i in range(n - 2, -1, -1):
            torch.mul(lefts[i + 1][P:] @ Ws[i + 1], gp_gates[i], out=lefts[i][P:])
        grad_x = lefts[0][P:] @ Ws[0]  # (Q, I)
        norm = torch.linalg.vector_norm(grad_x, dim=1)
        ctx.save_for_backward(h, grad_x, norm, head_w, *gates, *gp_gates, *lefts, *rights, *Ws)
        ctx.layers = n
        return out, (norm - 1.0).pow(2).mean()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor, grad_gp: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        n = ctx.layers
        h_last, grad_x, norm, head_w, *rest = ctx.saved_tensors
        gates, gp_gates, lefts, rights, Ws = (rest[i * n : (i + 1) * n] for i in range(5))
        P, Q = h_last.shape[0], grad_x.shape[0]
        # The logits' term, top down: dA_l into the upper rows of lefts[l].
        torch.mul(grad_out[:, None] * head_w, gates[-1], out=lefts[-1][:P])
        for i in range(n - 2, -1, -1):
            torch.mul(lefts[i + 1][:P] @ Ws[i + 1], gates[i], out=lefts[i][:P])
        # The penalty's, bottom up: v_l into the lower rows of rights[l].
        scale = grad_gp * 2.0 / Q * (norm - 1.0) / norm.clamp_min(1e-12)
        torch.mul(grad_x, scale[:, None], out=rights[0][P:])
        for i in range(1, n):
            torch.mul(rights[i - 1][P:] @ Ws[i - 1].t(), gp_gates[i - 1], out=rights[i][P:])
        d_head_w = (grad_out @ h_last)[None, :] + ((rights[-1][P:] @ Ws[-1].t()) * gp_gates[-1]).sum(
            0, keepdim=True
        )
        grads: list[Tensor] = []
        for left, right in zip(lefts, rights):
            grads += [left.t() @ right, left[:P].sum(0)]  # W_l (both terms), b_l (the logits' only)
        return (None, None, None, None, None, *grads, d_head_w, grad_out.sum().reshape(1))


def critic_layers(D: Discriminator) -> tuple[list[tuple[str, nn.Linear]], float, float]:
    """The plain MLP critic's hidden layers as (parameter-name prefix, Linear), its LeakyReLU
    slope and its dropout rate (0 in eval mode, as nn.Dropout)."""
    linears = [(f"features.{i}", m) for i, m in enumerate(D.features) if isinstance(m, nn.Linear)]
    slope = next((m.negative_slope for m in D.features if isinstance(m, nn.LeakyReLU)), 0.2)
    p = next((m.p for m in D.features if isinstance(m, Dropout)), 0.0) if D.training else 0.0
    return linears, slope, p


def dropout_masks(rows: int, widths: list[int], p: float, like: Tensor) -> list[Tensor]:
    """Inverted-dropout masks (rows, width) as :class:`Dropout` draws them (the global RNG)."""
    return keep_masks([(rows, w) for w in widths], p, like)


def critic_forward(D: Discriminator, packs: Tensor, masks: list[Tensor] | None = None) -> Tensor:
    """The plain MLP critic's logits (P,) on packed rows (P, pac * I), as D(x) computes them.
    `masks`: the hidden layers' dropout masks (P, H_l), drawn here when not given (none in eval mode)."""
    layers, slope, p = critic_layers(D)
    if masks is None and p:
        masks = dropout_masks(packs.shape[0], [lin.out_features for _, lin in layers], p, packs)
    h = packs
    for i, (_, lin) in enumerate(layers):
        h = F.leaky_relu(F.linear(h, lin.weight, lin.bias), slope)
        if masks is not None:
            h = h * masks[i].to(h.dtype)
    return D.head(h).squeeze(1)


def pack_rows(parts: list[tuple[Tensor, Tensor | None]], pac: int, room: int = 0) -> Tensor:
    """PacGAN packs of the rows [x | c] of each (x, c) part in turn, written straight into one
    (packs + room, pac * width) buffer: D.pack(cat([cat([x, c], 1), ...])) followed by `room`
    uninitialised rows, without the intermediate tensors (three concatenations and a copy: 1 % of
    a `fair` step on a 2-core CPU, interleaved A/B). float32 unless every part is of one lower precision."""
    rows = sum(x.shape[0] for x, _ in parts)
    x0, c0 = parts[0]
    width = x0.shape[1] + (0 if c0 is None else c0.shape[1])
    dtype = x0.dtype
    for x, c in parts:
        dtype = torch.promote_types(dtype, x.dtype if c is None else torch.promote_types(x.dtype, c.dtype))
    buffer = x0.new_empty(rows // pac + room, pac * width, dtype=dtype)
    flat = buffer[: rows // pac].view(rows, width)
    start = 0
    for x, c in parts:
        end = start + x.shape[0]
        flat[start:end, : x.shape[1]] = x
        if c is not None:
            flat[start:end, x.shape[1] :] = c
        start = end
    return buffer


def critic_with_penalty(
    D: Discriminator,
    packs: Tensor,
    gen: torch.Generator,
    masks: list[Tensor] | None = None,
    room: bool = False,
) -> tuple[Tensor, Tensor]:
    """The plain MLP critic's (no extras, no spectral norm) logits on `packs` — real packs, then
    as many fake packs — and the gradient penalty on their interpolates, one norm and one
    eps ~ U[0, 1] per pack pair as in CTGAN's reference code (:class:`CriticWithPenalty`, float32).
    `masks`: the packs' dropout masks, then the interpolates' (:meth:`Tabular.critic_masks`);
    drawn here when not given (all ones in eval mode). `room`: `packs` is float32 and has P/2
    rows after its P packs that the penalty may overwrite (:func:`pack_rows`), else it is copied."""
    layers, slope, p = critic_layers(D)
    linears = [lin for _, lin in layers]
    Q = packs.shape[0] // 3 if room else packs.shape[0] // 2
    n, P = len(linears), 2 * Q
    if not room or packs.dtype != torch.float32:
        buffer = packs.new_empty(P + Q, packs.shape[1], dtype=torch.float32)
        buffer[:P] = packs[:P]
        packs = buffer
    if not masks:
        shapes = [(rows, lin.out_features) for rows in (P, Q) for lin in linears]
        masks = keep_masks(shapes, p, packs) if p else [packs.new_ones(shape) for shape in shapes]
    eps = torch.rand((Q, 1), device=packs.device, generator=gen)
    params = [t for lin in linears for t in (lin.weight, lin.bias)]
    with torch.autocast(packs.device.type, enabled=False):
        return CriticWithPenalty.apply(
            packs, eps, slope, masks[:n], masks[n:], *params, D.head.weight, D.head.bias
        )


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
        # CTGAN's critic judges packs independently, so real and fake packs can share one pass and
        # the penalty has a closed form (with hidden layers); minibatch layers and spectral norm
        # change that, and DP-SGD needs it (a pack's gradient must depend on that pack alone).
        # Reusing the G phase's rows in the next D phase suits CTGAN too: each fake keeps its own c.
        self.reuse_fakes = cfg.train.reuse_fakes and cfg.train.n_dis == 1
        # The G phase's rows are the D phase's, generated with G's graph (both phases use the same
        # G weights, so these are the rows a fresh pass would make, noise aside): one G pass a step.
        self.share_fakes = self.net.share_fakes and cfg.train.n_dis == 1 and not self.reuse_fakes
        self.shared: dict[str, Tensor] = {}  # {"raw", "fake"}: the D phase's rows, for the G phase
        self.plain_critic = not (self.stab.mbstd or self.stab.mbdisc or self.stab.spectral_norm)
        self.private = self.net.dp_noise_multiplier > 0
        self.dp_steps = 0  # private critic steps taken (the accountant's T)
        if self.private and not self.plain_critic:
            raise ConfigError(
                "differential privacy needs packs judged independently: "
                "turn off stab.mbstd, stab.mbdisc and stab.spectral_norm"
            )

    @classmethod
    def recipe(cls, spec: DataSpec, loss: str) -> dict[str, Any]:
        # CTGAN's WGAN-GP, batch 500 and Adam betas (0.5, 0.9); Adam's step 5e-4 instead of 2e-4 and
        # an average of G's weights (decay 0.999) for sampling, as TabularGAN's defaults
        # (benchmarks/bench_tabular_defaults.py; the trade-off in docs/tabular.md).
        return {
            "loss": {"name": "wgan-gp"},
            "train": {
                "batch_size": 500,
                "g_lr": 5e-4,
                "d_lr": 5e-4,
                "beta1": 0.5,
                "beta2": 0.9,
                "ema_decay": 0.999,
            },
        }

    def build(self) -> tuple[nn.Module, nn.Module]:
        n = self.net
        G = ResidualGenerator(n.z_dim + self.layout.cond_dim, list(n.g_dims), self.spec.shape[0])
        d_in = (self.spec.shape[0] + self.layout.cond_dim) * self.stab.pac  # a pack of rows and their c
        features = critic_features(d_in, list(n.d_dims), n.dropout)
        return G, self.make_discriminator(features, n.d_dims[-1] if n.d_dims else d_in)

    def make_sampler(self, data: Dataset, batch_size: int, seed: int) -> Any:
        # Imported here: ganforge.tabular imports the engine, which imports the families.
        from ..tabular.sampling import TableSampler, UniformTableSampler

        if not self.private:
            return TableSampler(data.x, self.layout, batch_size, seed, self.net.log_frequency)
        if batch_size > len(data):
            raise ConfigError(
                f"private training draws batch_size ({batch_size}) distinct rows per step, "
                f"but the table has {len(data)}: lower the batch size"
            )
        return UniformTableSampler(data.x, self.layout, batch_size, seed, log_frequency=False)

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

    def new_rows(
        self, G: nn.Module, like: Tensor, c: Tensor | None, gen: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """G's raw output and activated rows for a fresh z, as many as `like` has rows."""
        raw = self.raw(G, self.sample_z(like.shape[0], like.device, gen), c)
        return raw, self.layout.activate(raw, self.net.tau, gen)

    def with_cond(self, x: Tensor, c: Tensor | None) -> Tensor:
        return x if c is None else torch.cat([x, c], dim=1)

    # --- losses -------------------------------------------------------------------------------------

    def d_rows(
        self, G: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """(real rows, their conditional vector, generated rows, the one G was given); the
        generated rows are detached (with `share_fakes` G's graph is kept for this step's G phase)."""
        real, c = batch["x"], batch.get("c")
        cached = self.take_cached(real.shape[0])
        if cached:
            fake, c = cached["x"], cached.get("c")  # the last G phase's rows, with their c
        elif self.share_fakes:  # with G's graph, kept for this step's G phase
            params = list(G.parameters())
            flags = [p.requires_grad for p in params]  # the engine's D phase has them off
            for p in params:
                p.requires_grad_(True)
            try:
                with torch.enable_grad():
                    raw, fake = self.new_rows(G, real, c, gen)
            finally:
                for p, flag in zip(params, flags):
                    p.requires_grad_(flag)
            self.shared = {"raw": raw, "fake": fake}
            fake = fake.detach()
        else:
            with torch.no_grad():
                _, fake = self.new_rows(G, real, c, gen)
        return real, batch.get("c_real"), fake, c

    def d_inputs(self, G: nn.Module, batch: dict[str, Tensor], gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """Real rows with their own conditional vector, generated rows with the one G was given."""
        real, c_real, fake, c = self.d_rows(G, batch, gen)
        return self.d_view(self.with_cond(real, c_real), gen), self.d_view(self.with_cond(fake, c), gen)

    def d_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        if self.private:
            return self.private_d_loss(G, D, batch, gen)
        if not self.plain_critic:
            return super().d_loss(G, D, batch, gen)
        masks: list[Tensor] = []
        gp: Tensor | None = None
        if self.net.d_dims:  # real packs, then fake packs, written into one buffer
            if self.stab.instance_noise:  # D sees the rows (+) their c with noise added
                real_in, fake_in = self.d_inputs(G, batch, gen)
                parts = [(real_in, None), (fake_in, None)]
            else:
                real, c_real, fake, c = self.d_rows(G, batch, gen)
                parts = [(real, c_real), (fake, c)]
            rows = parts[0][0].shape[0]
            room = rows // D.pac if self.loss.gradient_penalty else 0  # the penalty's rows
            packs = pack_rows(parts, D.pac, room=room)
            masks = self.critic_masks(D, 2 * rows // D.pac, packs)
            if self.loss.gradient_penalty:
                out, gp = critic_with_penalty(D, packs, gen, masks, room=True)
            else:
                out = critic_forward(D, packs, masks or None)
        else:
            real_in, fake_in = self.d_inputs(G, batch, gen)
            out = D(torch.cat([real_in, fake_in]))
        real_out, fake_out = out.chunk(2)
        loss = self.loss.d_loss(real_out, fake_out, **self.smoothing())
        stats: Stats = {"Loss/D": loss.detach()}
        if self.loss.gradient_penalty:
            if gp is None:  # no hidden layers: D is linear, its gradient constant
                gp = gradient_penalty(D, real_in, fake_in, generator=gen)
            loss = loss + self.cfg.loss.gp_lambda * gp
            stats["Loss/D_gp"] = gp.detach()
        stats.update(self.d_output_stats(real_out, fake_out))
        return loss, stats

    def critic_masks(self, D: nn.Module, packs: int, like: Tensor) -> list[Tensor]:
        """One draw of the D phase's dropout masks: the packs' pass, then the penalty's (on half
        as many interpolates) when the loss has one; [] without dropout."""
        layers, _, p = critic_layers(D)
        if not p:
            return []
        widths = [lin.out_features for _, lin in layers]
        shapes = [(packs, w) for w in widths]
        if self.loss.gradient_penalty:
            shapes += [(packs // 2, w) for w in widths]
        return keep_masks(shapes, p, like.float())  # float32: the penalty's masks stay float32 under amp

    def private_d_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        """DP-SGD's gradient as a loss the engine back-propagates unchanged: <theta, g~> has the
        gradient g~, the clipped and noised mean of the packs' gradients (:mod:`ganforge.tabular.privacy`),
        so the engine's backward, guard and Adam step apply as for any family. The stats leave out
        everything computed from real rows: those would be released without noise."""
        from ..tabular.privacy import clip_and_noise, critic_unit_grads  # lazily, as in make_sampler

        real_in, fake_in = self.d_inputs(G, batch, gen)
        # The penalty's interpolation weight per row (Gulrajani's epsilon; not the privacy budget).
        alpha = torch.rand((real_in.shape[0], 1), device=real_in.device, dtype=real_in.dtype, generator=gen)
        grads, fake_out = critic_unit_grads(
            D,
            D.pack(real_in),
            D.pack(fake_in),
            D.pack(alpha.expand_as(real_in)),
            partial(self.loss.d_loss, **self.smoothing()),
            self.cfg.loss.gp_lambda if self.loss.gradient_penalty else None,
        )
        private = clip_and_noise(grads, self.net.dp_noise_multiplier, self.net.dp_max_grad_norm, gen)
        self.dp_steps += 1
        surrogate = sum((p * private[k]).sum() for k, p in D.named_parameters())
        return surrogate, {"D/fake": fake_out.mean()}

    def g_loss(
        self, G: nn.Module, D: nn.Module, batch: dict[str, Tensor], gen: torch.Generator
    ) -> tuple[Tensor, Stats]:
        c = batch.get("c")  # the last D phase's conditional vector, with a fresh z or its rows
        shared, self.shared = self.shared, {}
        raw, fake = (shared["raw"], shared["fake"]) if shared else self.new_rows(G, batch["x"], c, gen)
        self.cache_fakes(fake, c=c)
        fake_in = self.d_view(self.with_cond(fake, c), gen)
        if self.plain_critic and self.net.d_dims:
            logits = critic_forward(D, D.pack(fake_in))
        else:
            logits = D(fake_in)
        loss = self.loss.g_loss(logits)
        stats: Stats = {"Loss/G": loss.detach()}
        if c is not None:
            ce = self.layout.cond_loss(raw, batch["col"], batch["opt"])
            loss = loss + ce
            stats["Loss/G_cond"] = ce.detach()
        return loss, stats
