"""Adversarial losses and penalties as pure functions over discriminator outputs.

Every function takes raw discriminator outputs (logits for the probabilistic losses, critic
values for WGAN) and returns a scalar to *minimise*. Log-probabilities are computed with
softplus on logits, never sigmoid-then-log, so they stay finite for any logit:
    log D(x)      = log sigmoid(l)     = -softplus(-l)
    log(1 - D(x)) = log sigmoid(-l)    = -softplus(l)

A loss is registered as an :class:`AdversarialLoss`: the D loss, the G loss, and whether the
engine must clip D's weights (WGAN) or add a gradient penalty (WGAN-GP) in the D phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

# --- minimax / non-saturating (Goodfellow et al. 2014) -------------------------------------


def minimax_d_loss(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """L_D = -[log D(x) + log(1 - D(G(z)))]  (Goodfellow et al. 2014, Eq. 1).

    `real_target` < 1 is one-sided label smoothing (Salimans et al. 2016, Sec. 3.4): the real
    term becomes the cross-entropy -[t log D(x) + (1 - t) log(1 - D(x))]."""
    real_term = real_target * F.softplus(-real) + (1.0 - real_target) * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


def minimax_g_loss(fake: Tensor) -> Tensor:
    """Saturating L_G = log(1 - D(G(z))) (Goodfellow et al. 2014, Eq. 1): weak gradients when D wins."""
    return -F.softplus(fake).mean()


def ns_g_loss(fake: Tensor) -> Tensor:
    """Non-saturating L_G = -log D(G(z)) (Goodfellow et al. 2014, Sec. 3)."""
    return F.softplus(-fake).mean()


# --- Wasserstein (Arjovsky et al. 2017; Gulrajani et al. 2017) ------------------------------


def wgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Critic loss E[f(G(z))] - E[f(x)] (Arjovsky et al. 2017, Alg. 1), the negated W1 estimate."""
    return fake.mean() - real.mean()


def wgan_g_loss(fake: Tensor) -> Tensor:
    """L_G = -E[f(G(z))] (Arjovsky et al. 2017, Alg. 1)."""
    return -fake.mean()


# --- hinge (Lim & Ye 2017; Miyato et al. 2018) -----------------------------------------------


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """L_D = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))] (Miyato et al. 2018, Eq. 16)."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


# The hinge generator loss is the WGAN one, -E[D(G(z))] (Miyato et al. 2018, Eq. 17).
hinge_g_loss = wgan_g_loss


# --- least squares (Mao et al. 2017) -----------------------------------------------------------


def lsgan_d_loss(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """L_D = 1/2 E[(D(x) - b)^2] + 1/2 E[D(G(z))^2]  (Mao et al. 2017, Eq. 9 with a=0, b=c=1;
    `real_target` = b < 1 is one-sided label smoothing)."""
    return 0.5 * (real - real_target).pow(2).mean() + 0.5 * fake.pow(2).mean()


def lsgan_g_loss(fake: Tensor) -> Tensor:
    """L_G = 1/2 E[(D(G(z)) - 1)^2]  (Mao et al. 2017, Eq. 9)."""
    return 0.5 * (fake - 1.0).pow(2).mean()


# --- penalties ---------------------------------------------------------------------------------


def gradient_penalty(
    D: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """WGAN-GP penalty E[(||grad D(x_hat)||_2 - 1)^2] on x_hat = eps x + (1 - eps) G(z), eps ~ U[0, 1]
    (Gulrajani et al. 2017, Eq. 3 and Alg. 1). Unweighted: the caller multiplies by lambda."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, device=real.device, dtype=real.dtype, generator=generator)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    out = D(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.reshape(out.shape[0], -1).norm(2, dim=1)  # per D output (a PacGAN pack counts as one)
    return (norm - 1.0).pow(2).mean()


def r1_penalty(D: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """E[||grad_x D(x)||^2] (Mescheder et al. 2018, Eq. 9 without gamma/2): on real data it is
    R1, on generated data R2. Unweighted; the caller multiplies by gamma / 2."""
    x = x.detach().requires_grad_(True)
    out = D(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.pow(2).reshape(out.shape[0], -1).sum(dim=1).mean()


# --- registry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdversarialLoss:
    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]  # (real_out, fake_out) -> scalar
    g_loss: Callable[[Tensor], Tensor]  # fake_out -> scalar
    description: str
    weight_clip: bool = False  # clip D's weights to [-c, c] after each D step (WGAN)
    gradient_penalty: bool = False  # add lambda * gradient_penalty in the D phase (WGAN-GP)
    probabilistic: bool = True  # outputs are logits, so sigmoid(out) is D's probability "real"
    smoothable: bool = False  # d_loss takes `real_target` (one-sided label smoothing)


LOSSES: Registry[AdversarialLoss] = Registry("loss")
for _loss in (
    AdversarialLoss(
        "minimax",
        minimax_d_loss,
        minimax_g_loss,
        "original minimax game, saturating G loss (Goodfellow 2014)",
        smoothable=True,
    ),
    AdversarialLoss(
        "ns",
        minimax_d_loss,
        ns_g_loss,
        "non-saturating G loss -log D(G(z)) (Goodfellow 2014)",
        smoothable=True,
    ),
    AdversarialLoss(
        "wgan",
        wgan_d_loss,
        wgan_g_loss,
        "Wasserstein GAN with weight clipping (Arjovsky 2017)",
        weight_clip=True,
        probabilistic=False,
    ),
    AdversarialLoss(
        "wgan-gp",
        wgan_d_loss,
        wgan_g_loss,
        "Wasserstein GAN with gradient penalty (Gulrajani 2017)",
        gradient_penalty=True,
        probabilistic=False,
    ),
    AdversarialLoss(
        "hinge", hinge_d_loss, hinge_g_loss, "hinge loss (Lim & Ye 2017; Miyato 2018)", probabilistic=False
    ),
    AdversarialLoss(
        "lsgan",
        lsgan_d_loss,
        lsgan_g_loss,
        "least squares GAN (Mao 2017)",
        probabilistic=False,
        smoothable=True,
    ),
):
    LOSSES.add(_loss.name, _loss)
