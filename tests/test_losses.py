"""Each adversarial loss: value on a hand-computed case, and the sign of its gradient."""

import math

import pytest
import torch

from ganforge.losses import LOSSES, gradient_penalty

REAL = torch.tensor([2.0, 0.0])
FAKE = torch.tensor([-1.0, 3.0])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(a: float, b: float) -> float:
    return (a + b) / 2


# (d_loss(REAL, FAKE), g_loss(FAKE)) computed by hand from each paper's formula.
EXPECTED = {
    # -[log sigmoid(r)] - [log(1 - sigmoid(f))] = softplus(-r) + softplus(f)
    "minimax": (
        mean(softplus(-2), softplus(0)) + mean(softplus(-1), softplus(3)),
        -mean(softplus(-1), softplus(3)),
    ),
    "ns": (
        mean(softplus(-2), softplus(0)) + mean(softplus(-1), softplus(3)),
        mean(softplus(1), softplus(-3)),
    ),
    "wgan": (1.0 - 1.0, -1.0),  # E[f] - E[r] = 1 - 1; -E[f]
    "wgan-gp": (0.0, -1.0),
    # relu(1 - r): [0, 1] -> 0.5 ; relu(1 + f): [0, 4] -> 2.0
    "hinge": (2.5, -1.0),
    # 0.5 E[(r-1)^2] = 0.5 * (1 + 1)/2 = 0.5 ; 0.5 E[f^2] = 0.5 * (1 + 9)/2 = 2.5 ; G: 0.5 * (4 + 4)/2 = 2
    "lsgan": (3.0, 2.0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loss_values(name):
    loss = LOSSES.get(name)
    d_expected, g_expected = EXPECTED[name]
    assert loss.d_loss(REAL, FAKE).item() == pytest.approx(d_expected, abs=1e-6)
    assert loss.g_loss(FAKE).item() == pytest.approx(g_expected, abs=1e-6)


@pytest.mark.parametrize("name", LOSSES.names())
def test_gradient_signs(name):
    """Descending D's loss raises D(x) and lowers D(G(z)); descending G's loss raises D(G(z)).
    Outputs lie in (0, 1), between every loss's real and fake targets (LSGAN's are 1 and 0)."""
    loss = LOSSES.get(name)
    real = torch.tensor([0.3, 0.2], requires_grad=True)
    fake = torch.tensor([0.1, 0.4], requires_grad=True)
    loss.d_loss(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake_g = torch.tensor([0.1, 0.4], requires_grad=True)
    loss.g_loss(fake_g).backward()
    assert (fake_g.grad < 0).all()


def test_saturating_loss_vanishes_where_non_saturating_does_not():
    """Goodfellow et al. 2014, Sec. 3: when D confidently rejects fakes, log(1 - D(G(z))) saturates."""
    fake = torch.tensor([-10.0], requires_grad=True)
    LOSSES.get("minimax").g_loss(fake).backward()
    saturating = fake.grad.abs().item()
    fake.grad = None
    LOSSES.get("ns").g_loss(fake).backward()
    assert saturating < 1e-4 and fake.grad.abs().item() > 0.99


@pytest.mark.parametrize("name", ["minimax", "ns"])
def test_logit_losses_stay_finite_at_extreme_logits(name):
    big = torch.tensor([1e4, -1e4], requires_grad=True)
    loss = LOSSES.get(name)
    total = loss.d_loss(big, big) + loss.g_loss(big)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(big.grad).all()


def test_gradient_penalty_known_cases():
    """D(x) = w.x has gradient w everywhere: penalty = (|w| - 1)^2."""
    w = torch.tensor([3.0, 4.0])

    def D(x):
        return x @ w

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert gradient_penalty(D, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)
    unit = torch.tensor([0.6, 0.8])
    assert gradient_penalty(lambda x: x @ unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_is_differentiable_wrt_D():
    lin = torch.nn.Linear(2, 1)
    gp = gradient_penalty(lin, torch.randn(4, 2), torch.randn(4, 2))
    gp.backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
