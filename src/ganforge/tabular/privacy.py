"""Differential privacy for the tabular GAN: DP-SGD on the critic, and the accounting of its epsilon.

Mechanism: DP-SGD (Abadi et al. 2016, "Deep Learning with Differential Privacy", Alg. 1) on the
critic only. A unit is a PacGAN pack: `pac` real rows, with a pack of fakes and their interpolates
for the gradient penalty. Each unit's gradient g_i of its critic loss *including* its penalty is
clipped to norm C, the clipped gradients are summed, perturbed and divided by the number of units:

    g~ = (sum_i g_i min(1, C / ||g_i||) + N(0, sigma^2 C^2 I)) / m          (Alg. 1, lines 5-7)

Every sampled row is in exactly one pack, so one row changes at most one g_i, by at most C in
norm after clipping: the sensitivity of the sum is C. The generator only sees the data through the
critic, so its training and every sample are post-processing and cost no privacy.

Per-unit gradients: Opacus's per-sample hooks cannot differentiate the penalty (a double backward).
The critic is an MLP on packs, so each unit's gradient of a weight matrix is a sum of three outer
products (the real pack's, the fake pack's and the penalty's, :func:`critic_unit_grads`): the norms
come from 3 x 3 Gram matrices and the clipped sum is one product per layer ("ghost clipping":
Goodfellow 2015, "Efficient per-example gradient computations"; Li et al. 2022, Sec. 4), about the
cost of an ordinary critic step instead of materialising m gradients. The tests check these
gradients against torch.func (vmap over grad, a nested grad for the penalty).

Accounting: Renyi DP of the subsampled Gaussian mechanism (Mironov 2017, "Renyi Differential
Privacy"; Mironov, Talwar & Zhang 2019 for the subsampled bound), composed over the critic steps and
converted to (epsilon, delta), with Opacus. It assumes each row enters a step independently with
probability q (Poisson sampling). A pack needs exactly `pac` rows, so ganforge draws a fixed batch
of B distinct rows uniformly per step and accounts it with q = B / N: the approximation Abadi et al.
(2016) and most DP-SGD implementations make for fixed-size batches.

Not covered: the column transformer (category lists and their counts, the modes of each numeric
column, min/max bounds, decimals) is fitted on the data without noise. It is stored in the model
folder and shapes every sample, so the epsilon bounds what the *networks* reveal, not the schema.
The noise comes from torch's seeded generator, so runs are reproducible; that generator is not a
cryptographic one (see Mironov 2012 on floating-point attacks), which matters only against an
adversary who can observe or predict its state.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError
from ..families.tabular import critic_layers, dropout_masks, leaky_gate
from ..nn import Discriminator

# A unit's gradient of one parameter: dense (m, *shape), or factored (A (m, K, out), B (m, K, in))
# meaning sum_k A[:, k] (x) B[:, k], one outer product per term.
UnitGrad = Tensor | tuple[Tensor, Tensor]


# --- the mechanism -----------------------------------------------------------------------------------


def critic_pass(D: Discriminator, x: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """One pass of the plain MLP critic over packs x (m, I), fresh dropout masks included.

    Returns D(x) (m,), each layer's input [x, h_1, ..., h_L], the gates m_l * LeakyReLU'(a_l) and
    the output's gradients dD/da_l (m, H_l), from g_L = w * gate_L, g_l = (g_{l+1} W_{l+1}) * gate_l."""
    layers, slope, p = critic_layers(D)
    masks = dropout_masks(x.shape[0], [lin.out_features for _, lin in layers], p, x)
    h, inputs, gates = x, [], []
    for (_, lin), m in zip(layers, masks):
        inputs.append(h)
        a = torch.addmm(lin.bias, h, lin.weight.t())
        gates.append(leaky_gate(m, a, slope))
        h = F.leaky_relu(a, slope) * m
    inputs.append(h)
    out = (h @ D.head.weight.t() + D.head.bias).squeeze(1)
    signals = [D.head.weight * gates[-1]] if layers else []
    for (_, lin), gate in zip(reversed(layers[1:]), reversed(gates[:-1])):
        signals.insert(0, (signals[0] @ lin.weight) * gate)
    return out, inputs, gates, signals


@torch.no_grad()
def critic_unit_grads(
    D: Discriminator,
    real: Tensor,
    fake: Tensor,
    alpha: Tensor,
    d_loss: Callable[[Tensor, Tensor], Tensor],
    gp_lambda: float | None,
) -> tuple[dict[str, UnitGrad], Tensor]:
    """Each pack's gradient of d_loss(D(real_i), D(fake_i)) + lambda (||grad D(x_hat_i)|| - 1)^2,
    x_hat = alpha real + (1 - alpha) fake, by parameter name; and D(fake) (m,).

    real, fake: (m, I) packs; alpha: (m, I), a row's interpolation weight repeated over its columns.
    The loss terms give c g_l (x) h_{l-1} for the pack's dloss/dD = c; the penalty's, with
    u = lambda 2 (||grad_x|| - 1) grad_x / ||grad_x||, gives delta_1 (x) u for W_1 and, upwards,
    delta_l (x) v_{l-1}, v_l = (v_{l-1} W_l^T) * gate_l (as in families.tabular.CriticWithPenalty)."""
    layers, _, _ = critic_layers(D)
    out_r, in_r, _, g_r = critic_pass(D, real)
    out_f, in_f, _, g_f = critic_pass(D, fake)
    with torch.enable_grad():  # dloss/dD per pack: the loss is a sum over packs of their own terms
        o_r, o_f = out_r.clone().requires_grad_(True), out_f.clone().requires_grad_(True)
        per_pack = torch.func.vmap(d_loss)(o_r[:, None], o_f[:, None])
        c_r, c_f = torch.autograd.grad(per_pack.sum(), (o_r, o_f))
    a_terms = [[c_r[:, None] * gr, c_f[:, None] * gf] for gr, gf in zip(g_r, g_f)]
    b_terms = [[xr, xf] for xr, xf in zip(in_r, in_f)]
    head = c_r[:, None] * in_r[-1] + c_f[:, None] * in_f[-1]  # (m, H_L)
    if gp_lambda is not None:
        _, _, gates, deltas = critic_pass(D, torch.lerp(fake, real, alpha))
        grad_x = deltas[0] @ layers[0][1].weight if layers else D.head.weight.expand(real.shape[0], -1)
        norm = torch.linalg.vector_norm(grad_x, dim=1, keepdim=True)
        v = grad_x * (gp_lambda * 2.0 * (norm - 1.0) / norm.clamp_min(1e-12))
        for (_, lin), gate, delta, a, b in zip(layers, gates, deltas, a_terms, b_terms):
            a.append(delta)
            b.append(v)
            v = (v @ lin.weight.t()) * gate
        head = head + v
    grads: dict[str, UnitGrad] = {}
    for (name, _), a, b, gr, gf in zip(layers, a_terms, b_terms, g_r, g_f):
        grads[f"{name}.weight"] = (torch.stack(a, dim=1), torch.stack(b, dim=1))
        grads[f"{name}.bias"] = c_r[:, None] * gr + c_f[:, None] * gf
    grads["head.weight"] = head[:, None, :]
    grads["head.bias"] = (c_r + c_f)[:, None]
    return grads, out_f


def unit_norms(grads: dict[str, UnitGrad]) -> Tensor:
    """(m,) L2 norm of each unit's gradient over every parameter. A factored term's squared
    Frobenius norm is sum_{k,l} (A_k . A_l)(B_k . B_l): two (m, K, K) Gram matrices."""
    total: Tensor | float = 0.0
    for g in grads.values():
        if isinstance(g, tuple):
            A, B = g
            total = total + ((A @ A.mT) * (B @ B.mT)).sum(dim=(1, 2))
        else:
            total = total + g.reshape(g.shape[0], -1).square().sum(dim=1)
    return torch.as_tensor(total).sqrt()


def weighted_sum(g: UnitGrad, scale: Tensor) -> Tensor:
    """sum_i scale_i g_i: for factored gradients one (out, m K) x (m K, in) product."""
    if isinstance(g, tuple):
        A, B = g
        return (A * scale[:, None, None]).flatten(0, 1).t() @ B.flatten(0, 1)
    return torch.tensordot(scale, g, dims=1)


def clip_and_noise(
    grads: dict[str, UnitGrad], sigma: float, clip: float, generator: torch.Generator | None
) -> dict[str, Tensor]:
    """(sum_i g_i min(1, C / ||g_i||) + N(0, sigma^2 C^2 I)) / m for per-unit gradients
    (Abadi et al. 2016, Alg. 1); ||g_i|| is the norm over all parameters together."""
    norms = unit_norms(grads)
    m = norms.shape[0]
    scale = (clip / (norms + 1e-6)).clamp(max=1.0)  # Opacus's rule: the 1e-6 keeps 0-norms finite
    out = {}
    for key, g in grads.items():
        total = weighted_sum(g, scale)
        noise = torch.randn(total.shape, device=total.device, dtype=total.dtype, generator=generator)
        out[key] = (total + (sigma * clip) * noise) / m
    return out


# --- the accounting -----------------------------------------------------------------------------------


def require_opacus() -> str:
    """Opacus's version; one clear error when it is missing."""
    try:
        import opacus
    except ImportError:
        raise ConfigError(
            "differential privacy needs Opacus for its accounting: pip install 'ganforge[privacy]'"
        ) from None
    return str(opacus.__version__)


def default_delta(n: int) -> float:
    """1 / N^1.1: delta must sit well below 1 / N, since a mechanism that publishes each row with
    probability delta is (0, delta)-DP and with delta >= 1 / N publishes about one row outright
    (Dwork & Roth 2014, Sec. 2.3; Ponomareva et al. 2023, "How to DP-fy ML")."""
    return 1.0 / n**1.1


# Renyi orders: Opacus's defaults (1.1 ... 63) and larger ones, which bound small budgets tighter.
ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [80, 96, 128, 192, 256, 384, 512]


@functools.lru_cache(maxsize=64)  # a binary search over the accountant: ~1 s; fits over seeds repeat it
def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest sigma (to 0.5 % of epsilon) whose `steps` subsampled Gaussian steps spend at
    most `epsilon` at `delta`."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "optimal order is the largest alpha"
            return float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant="rdp",
                    epsilon_tolerance=0.005 * epsilon,
                    alphas=ORDERS,
                )
            )
    except ValueError:  # Opacus: "The privacy budget is too low."
        raise ConfigError(
            f"epsilon {epsilon} cannot be met over {steps} steps at sampling rate {sample_rate:.3g}: "
            "raise epsilon or lower the steps"
        ) from None


def spent_epsilon(sigma: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon at `delta` after `steps` subsampled Gaussian steps: RDP of the sampled Gaussian
    mechanism (Mironov, Talwar & Zhang 2019) at `ORDERS`, composed additively (Mironov 2017,
    Prop. 1), converted to (epsilon, delta) by Balle et al. (2020, Thm. 21)."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    rdp = compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=steps, orders=ORDERS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = get_privacy_spent(orders=ORDERS, rdp=rdp, delta=delta)
    return float(eps)


NOT_COVERED = (
    "the column transformer (category lists and counts, modes of numeric columns, bounds, decimals) "
    "is fitted on the data without differential privacy"
)


def privacy_record(
    *,
    target_epsilon: float,
    delta: float,
    sigma: float,
    clip: float,
    sample_rate: float,
    steps: int,
    batch_size: int,
    pac: int,
    opacus_version: str,
) -> dict[str, Any]:
    """What a private fit spent and how it was accounted (saved in the model folder's JSON)."""
    return {
        "mechanism": "DP-SGD on the critic (Abadi et al. 2016); the generator is post-processing",
        "epsilon": spent_epsilon(sigma, sample_rate, steps, delta) if steps else 0.0,
        "delta": delta,
        "target_epsilon": target_epsilon,
        "noise_multiplier": sigma,
        "max_grad_norm": clip,
        "sample_rate": sample_rate,
        "steps": steps,
        "batch_size": batch_size,
        "unit": f"a pack of {pac} rows",
        "sampling": "batch_size distinct rows uniformly per step, accounted as Poisson with q = batch/rows",
        "accountant": f"RDP (Mironov 2017), opacus {opacus_version}",
        "not_covered": NOT_COVERED,
    }
