"""Stabilisers: each one's defining effect on a known case, and that each composes with the loop."""

import copy

import pytest
import torch

import ganforge
from ganforge.api import build_config
from ganforge.families import FAMILIES, DataSpec
from ganforge.losses import LOSSES, r1_penalty
from ganforge.nn import MinibatchDiscrimination, MinibatchStd, diff_augment
from ganforge.nn.diffaug import cutout, translation

from .conftest import tiny_overrides

POINTS = DataSpec("points", (2,))
IMAGES = DataSpec("image", (1, 16, 16))


def family(spec, model="mlp", **stab):
    cfg = build_config(
        {"model": model, "net": FAMILIES.get(model).tiny, "stab": stab, "train": {"batch_size": 8}}, spec
    )
    return FAMILIES.get(model)(cfg, spec)


def test_spectral_norm_bounds_every_D_weight():
    fam = family(IMAGES, "dcgan", spectral_norm=True)
    G, D = fam.networks()
    for _ in range(20):  # power iterations converge over forward passes
        D(torch.randn(8, 1, 16, 16))
    D.eval()
    for m in D.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
            assert sigma == pytest.approx(1.0, abs=0.05)


def test_r1_penalty_known_case():
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    assert r1_penalty(lambda x: x @ w, torch.randn(5, 2)).item() == pytest.approx(25.0)


def test_label_smoothing_value():
    """t = 0.9: real term = -[0.9 log s(r) + 0.1 log(1 - s(r))]; at r = 0 it is log 2."""
    loss = LOSSES.get("ns").d_loss(torch.zeros(3), torch.full((3,), -1e4), real_target=0.9)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)


def test_label_smoothing_refused_for_wgan():
    with pytest.raises(ganforge.GanforgeError, match="label_smoothing"):
        cfg = build_config({"model": "mlp", "loss": "wgan", "stab": {"label_smoothing": 0.1}}, POINTS)
        FAMILIES.get("mlp")(cfg, POINTS)


def test_instance_noise_anneals_to_zero():
    fam = family(POINTS, instance_noise=0.5)
    x = torch.zeros(4000, 2)
    gen = torch.Generator().manual_seed(0)
    fam.progress = 0.0
    assert fam.d_view(x, gen).std().item() == pytest.approx(0.5, rel=0.05)
    fam.progress = 0.5
    assert fam.d_view(x, gen).std().item() == pytest.approx(0.25, rel=0.05)
    fam.progress = 1.0
    assert torch.equal(fam.d_view(x, gen), x)


def test_minibatch_std_sees_collapse():
    collapsed = torch.ones(6, 3)
    assert MinibatchStd()(collapsed)[:, -1].max().item() < 1e-3
    assert MinibatchStd()(torch.randn(6, 3))[:, -1].min().item() > 0.3


def test_minibatch_discrimination_on_identical_samples():
    layer = MinibatchDiscrimination(3, n_kernels=4)
    out = layer(torch.ones(5, 3))
    assert out.shape == (5, 7)
    assert torch.allclose(out[:, 3:], torch.full((5, 4), 4.0))  # 4 other samples at L1 distance 0


def test_pacgan_packs_samples():
    fam = family(POINTS, pac=4)
    _, D = fam.networks()
    assert D(torch.randn(8, 2)).shape == (2,)
    assert fam.d_shape == (8,)
    with pytest.raises(ganforge.GanforgeError, match="multiple of stab.pac"):
        build_cfg = build_config({"model": "mlp", "stab": {"pac": 3}, "train": {"batch_size": 8}}, POINTS)
        FAMILIES.get("mlp")(build_cfg, POINTS)


def g_grads(fam, G, D, seed=0):
    batch = {"x": torch.randn(8, 2, generator=torch.Generator().manual_seed(1))}
    G.zero_grad()
    loss, stats = fam.g_loss(G, D, batch, torch.Generator().manual_seed(seed))
    loss.backward()
    return [p.grad.clone() for p in G.parameters()], stats


def with_d_adam(fam, D, lr):
    """Attach an Adam optimiser to D, as the engine does, with one step taken so its moments are live."""
    opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9))
    D.requires_grad_(True)
    D(torch.randn(8, 2, generator=torch.Generator().manual_seed(7))).pow(2).mean().backward()
    opt.step()
    D.requires_grad_(False)  # as in the engine's G phase
    fam.d_optimizer = opt
    return opt


def test_unrolling_with_zero_step_size_is_the_plain_g_loss():
    torch.manual_seed(0)
    plain = family(POINTS)
    G, D = plain.networks()
    unrolled = family(POINTS, unrolled_steps=3)
    opt = with_d_adam(unrolled, D, lr=0.0)
    base, _ = g_grads(plain, G, D)
    same, _ = g_grads(unrolled, G, D)
    opt.param_groups[0]["lr"] = 0.05
    moved, _ = g_grads(unrolled, G, D)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(base, same))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(base, moved))


def test_one_look_ahead_step_is_d_optimisers_adam_step():
    """The look-ahead replays D's optimiser: one unrolled step equals torch's Adam step on a copy."""
    torch.manual_seed(0)
    fam = family(POINTS, unrolled_steps=1)
    _, D = fam.networks()
    opt = with_d_adam(fam, D, lr=0.01)
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    ahead = fam.unrolled_params(D, real, fake, {"x": real})

    D2 = copy.deepcopy(D).requires_grad_(True)
    opt2 = torch.optim.Adam(D2.parameters(), lr=0.01, betas=(0.5, 0.9))
    opt2.load_state_dict(opt.state_dict())
    fam.loss.d_loss(D2(real).flatten(), D2(fake).flatten()).backward()
    opt2.step()
    for name, p in D2.named_parameters():
        assert torch.allclose(ahead[name].detach(), p.detach(), atol=1e-6), name
        assert not torch.allclose(dict(D.named_parameters())[name], p, atol=1e-4), name  # it moved


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def unrolled_setup(loss):
    torch.manual_seed(0)
    spec, model = POINTS, "mlp"
    cfg = build_config(
        {
            "model": model,
            "loss": loss,
            "net": FAMILIES.get(model).tiny,
            "stab": {"unrolled_steps": 3},
            "train": {"batch_size": 8},
        },
        spec,
    )
    fam = FAMILIES.get(model)(cfg, spec)
    G, D = fam.networks()
    with_d_adam(fam, D, lr=0.05)
    return fam, G, D, {"x": torch.randn(8, 2, generator=torch.Generator().manual_seed(1))}


def directional_derivatives(f, G, seed=4, eps=1e-6):
    """(autograd, central-difference) derivatives of f(G) along one random direction of G's weights."""
    theta = torch.nn.utils.parameters_to_vector(G.parameters()).detach().clone()
    direction = torch.randn(theta.shape, generator=torch.Generator().manual_seed(seed))
    G.zero_grad()
    f().backward()
    analytic = torch.cat([p.grad.flatten() for p in G.parameters()]) @ direction
    values = []
    for sign in (1, -1):
        torch.nn.utils.vector_to_parameters(theta + sign * eps * direction, G.parameters())
        values.append(f().item())
    torch.nn.utils.vector_to_parameters(theta, G.parameters())
    return analytic.item(), (values[0] - values[1]) / (2 * eps)


def test_unrolled_minimax_gradient_is_that_of_the_value_function(float64):
    """Metz et al. 2017, Eq. 5: with the minimax loss G descends f_K = V(theta_G, theta_D^K) =
    -L_D at the look-ahead parameters. G's gradient (3 Adam look-ahead steps, float64) matches
    central differences of that reference objective, real-data half included."""
    fam, G, D, batch = unrolled_setup("minimax")

    def g_loss():
        return fam.g_loss(G, D, batch, torch.Generator().manual_seed(3))[0]

    def value():
        gen = torch.Generator().manual_seed(3)
        fake = fam.generate(G, fam.sample_z(8, torch.device("cpu"), gen), None)
        params = fam.unrolled_params(D, batch["x"], fake, batch)
        real_out, fake_out = (
            torch.func.functional_call(D, params, (x,)).flatten() for x in (batch["x"], fake)
        )
        return -fam.loss.d_loss(real_out, fake_out)

    analytic, _ = directional_derivatives(g_loss, G)
    _, numeric = directional_derivatives(value, G)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_unrolled_gradient_has_the_look_ahead_term(float64, monkeypatch):
    """Non-saturating loss: autograd matches central differences of G's own unrolled loss, and
    the d(theta_D^K)/d(theta_G) term matters: detaching the look-ahead moves the gradient by far
    more than the tolerance."""
    fam, G, D, batch = unrolled_setup("ns")

    def g_loss():
        return fam.g_loss(G, D, batch, torch.Generator().manual_seed(3))[0]

    analytic, numeric = directional_derivatives(g_loss, G)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)

    from ganforge.families import base

    look_ahead = base.adam_look_ahead

    def detached(p, g, *rest):
        new_p, moments = look_ahead(p, g, *rest)
        return new_p.detach().requires_grad_(True), moments

    monkeypatch.setattr(base, "adam_look_ahead", detached)
    first_order, _ = directional_derivatives(g_loss, G)
    assert abs(first_order - analytic) > 1e3 * abs(analytic - numeric)


def test_feature_matching_term():
    fam = family(POINTS, feature_matching=1.0)
    G, D = fam.networks()
    _, stats = g_grads(fam, G, D)
    assert stats["Loss/G_fm"].item() > 0


def test_translation_shifts_content():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1.0
    outs = [translation(x, torch.Generator().manual_seed(s)) for s in range(20)]
    for out in outs:
        assert out.sum().item() in (0.0, 1.0)  # moved (or pushed off the edge), never duplicated
    assert any(out[0, 0, 4, 4] == 0 for out in outs)


def test_cutout_zeroes_a_quarter():
    out = cutout(torch.ones(16, 1, 8, 8), torch.Generator().manual_seed(0))
    zero_fraction = (out == 0).float().mean(dim=(1, 2, 3))
    assert (zero_fraction <= 0.25 + 1e-6).all() and zero_fraction.max() == 0.25


def test_diffaug_is_differentiable():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    diff_augment(x, "color,translation,cutout", torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


ALL_STABILISERS = [
    "stab.spectral_norm=true",
    "stab.g_spectral_norm=true",
    "stab.r1_gamma=1",
    "stab.r2_gamma=1",
    "stab.reg_every=2",
    "stab.label_smoothing=0.1",
    "stab.instance_noise=0.1",
    "stab.noise_steps=3",
    "stab.mbstd=true",
    "stab.mbdisc=4",
    "stab.feature_matching=0.5",
    "stab.pac=2",
    "stab.unrolled_steps=2",
]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        ("mlp", "ring8"),
        ("dcgan", "digits"),
        ("cgan", "digits"),
        pytest.param("cgan", "ring8", marks=pytest.mark.slow),
    ],
)
def test_all_stabilisers_compose_and_resume_exactly(tmp_path, model, data):
    extra = (
        ["data.resolution=8", "data.limit=48", "stab.diffaug=color,translation,cutout"]
        if data == "digits"
        else []
    )
    args = [*tiny_overrides(model), *ALL_STABILISERS, *extra, "data.n_points=256", "train.batch_size=8"]
    full = ganforge.train(
        data=data, model=model, out=tmp_path / "full", steps=4, overrides=args, progress=False
    )
    ganforge.train(data=data, model=model, out=tmp_path / "split", steps=2, overrides=args, progress=False)
    split = ganforge.train(out=tmp_path / "split", steps=4, resume=True, progress=False)
    for a, b in zip(full.trainer.G.parameters(), split.trainer.G.parameters()):
        assert torch.equal(a, b)
    records = (tmp_path / "full" / "stats.jsonl").read_text()
    for key in ("Loss/D_r1", "Loss/D_r2", "Loss/G_fm"):
        assert key in records
    assert "NaN" not in records
