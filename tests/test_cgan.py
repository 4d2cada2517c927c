"""The class-conditional family `cgan`: conditional batch norm, the projection discriminator's
maths, every stabiliser with labels, determinism, and the save / load / sample round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ganforge
from ganforge.api import build_config
from ganforge.cli import main
from ganforge.data import load_dataset
from ganforge.errors import ConfigError
from ganforge.families import FAMILIES, DataSpec
from ganforge.nn import ConditionalBatchNorm, ConditionalSequential, Discriminator, ProjectionDiscriminator

from .conftest import tiny_overrides

DIGITS = DataSpec("image", (1, 16, 16), n_classes=10)
POINTS = DataSpec("points", (2,), n_classes=8)
DIGITS_ARGS = ["data.resolution=8", "data.limit=48", "train.batch_size=8"]


def family(spec, **stab):
    settings = {"model": "cgan", "net": FAMILIES.get("cgan").tiny, "stab": stab, "train": {"batch_size": 8}}
    return FAMILIES.get("cgan")(build_config(settings, spec), spec)


def train(tmp_path, name, steps=3, data="digits", extra=(), **kw):
    data_args = DIGITS_ARGS if data == "digits" else ["data.n_points=256", "train.batch_size=8"]
    return ganforge.train(
        data=data,
        model="cgan",
        out=tmp_path / name,
        steps=steps,
        progress=False,
        overrides=[*tiny_overrides("cgan"), *data_args, "monitor.enabled=false", *extra],
        **kw,
    )


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("spec", [DIGITS, POINTS], ids=["image", "points"])
def test_shapes_and_conditioning_changes_the_output(spec):
    fam = family(spec)
    G, D = fam.networks()
    z = fam.sample_z(6, torch.device("cpu"), torch.Generator().manual_seed(0))
    y0, y1 = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    G.eval()
    x0, x1 = fam.generate(G, z, y0), fam.generate(G, z, y1)
    assert x0.shape == (6, *spec.shape) and not torch.allclose(x0, x1)
    if spec.kind == "image":
        assert x0.abs().max() <= 1
    out0, out1 = D(x0, y0), D(x0, y1)
    assert out0.shape == (6,) and not torch.allclose(out0, out1)  # D's verdict depends on the label


def test_conditional_batch_norm_by_hand():
    """(1 + W_gamma e_y) * BN(x) + W_beta e_y, with a shared embedding e_y projected per layer."""
    cbn = ConditionalBatchNorm(2, cond_dim=1, image=False)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.tensor([[1.0], [0.0]]))
        cbn.bias.weight.copy_(torch.tensor([[0.0], [3.0]]))
    x = torch.tensor([[1.0, 5.0], [3.0, 5.0]])  # BN (batch statistics): [[-1, 0], [1, 0]]
    c = torch.tensor([[2.0], [-1.0]])
    out = ConditionalSequential(cbn, torch.nn.Identity())(x, c)
    expected = torch.tensor([[-1.0 * 3, 0 + 6], [1.0 * 0, 0 - 3]])
    assert torch.allclose(out, expected, atol=1e-4)


def test_projection_logit_by_hand():
    """Miyato & Koyama 2018, Eq. 3: D(x, y) = w.phi(x) + b + <v_y, phi(x)>, with phi the identity."""
    D = ProjectionDiscriminator(torch.nn.Identity(), n_features=2, n_classes=3)
    with torch.no_grad():
        D.head.weight.copy_(torch.tensor([[1.0, -1.0]]))
        D.head.bias.fill_(0.5)
        D.project.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]))  # v_0, v_1, v_2
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [-1.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    # psi = x1 - x2 + 0.5 = -0.5, -0.5, -1.5;  <v_y, x> = 1, 9, 2
    assert D(x, y).tolist() == pytest.approx([0.5, 8.5, 0.5])
    plain = Discriminator(torch.nn.Identity(), 2)
    plain.head.load_state_dict(D.head.state_dict())
    with torch.no_grad():
        D.project.weight.zero_()
    assert torch.equal(D(x, y), plain(x))  # no class embedding: the unconditional D


def test_projection_of_a_pacgan_pack_by_hand():
    """pac = 2: one input holds two samples and their two labels; slot i has its own embeddings."""
    D = ProjectionDiscriminator(torch.nn.Flatten(), n_features=4, n_classes=2, pac=2)
    with torch.no_grad():
        D.head.weight.zero_()
        D.head.bias.zero_()
        D.project.weight.copy_(torch.arange(16.0).view(4, 4))  # rows: v^(0)_0, v^(0)_1, v^(1)_0, v^(1)_1
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # one pack: phi = (1, 0, 0, 1)
    # labels (1, 0): <v^(0)_1, phi> + <v^(1)_0, phi> = (4 + 7) + (8 + 11)
    assert D(x, torch.tensor([1, 0])).tolist() == [30.0]
    assert D(x, torch.tensor([0, 1])).tolist() == [(0 + 3) + (12 + 15)]


def test_spectral_norm_reaches_the_class_embeddings():
    fam = family(DIGITS, spectral_norm=True)
    _, D = fam.networks()
    assert torch.nn.utils.parametrize.is_parametrized(D.project, "weight")


def test_unlabelled_data_and_missing_labels_are_refused():
    with pytest.raises(ConfigError, match="model 'cgan' needs class labels"):
        family(DataSpec("image", (1, 16, 16)))
    fam = family(DIGITS)
    G, _ = fam.build()
    with pytest.raises(ConfigError, match="needs one class label per sample"):
        fam.generate(G, torch.randn(2, fam.net.z_dim))


# --------------------------------------------------------------------------- losses with labels


def d_batch(n=8):
    gen = torch.Generator().manual_seed(1)
    return {"x": torch.rand(n, 1, 16, 16, generator=gen) * 2 - 1, "y": torch.arange(n) % 10}


def g_grads(fam, G, D, seed=0):
    G.zero_grad()
    loss, stats = fam.g_loss(G, D, d_batch(), torch.Generator().manual_seed(seed))
    loss.backward()
    return [p.grad.clone() for p in G.parameters()], stats


def test_fakes_use_the_real_batch_labels():
    """The D phase generates its fakes for the real batch's labels (module docstring)."""
    fam = family(DIGITS)
    G, _ = fam.networks()
    seen = []
    G.register_forward_hook(lambda module, inputs, out: seen.append(inputs[1].clone()))
    batch = d_batch()
    fam.d_inputs(G, batch, torch.Generator().manual_seed(0))
    assert torch.equal(seen[0], batch["y"])


def test_unrolled_look_ahead_with_zero_step_is_the_plain_g_loss():
    torch.manual_seed(0)
    plain = family(DIGITS)
    G, D = plain.networks()
    D.requires_grad_(False)
    base, _ = g_grads(plain, G, D)
    unrolled = family(DIGITS, unrolled_steps=2)
    unrolled.d_optimizer = opt = torch.optim.Adam(D.parameters(), lr=0.0)
    same, _ = g_grads(unrolled, G, D)
    opt.param_groups[0]["lr"] = 0.05
    moved, _ = g_grads(unrolled, G, D)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(base, same))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(base, moved))


@pytest.mark.parametrize(
    ("loss", "stab", "key"),
    [
        ("wgan-gp", {}, "Loss/D_gp"),
        ("ns", {"r1_gamma": 1.0}, "Loss/D_r1"),
        ("ns", {"r2_gamma": 1.0}, "Loss/D_r2"),
        ("ns", {"feature_matching": 1.0}, "Loss/G_fm"),
    ],
)
def test_penalties_see_the_labels(loss, stab, key):
    """Each penalty differentiates D(., y) for the batch's labels: a different y, a different value."""
    spec = DIGITS
    settings = {"model": "cgan", "loss": loss, "net": FAMILIES.get("cgan").tiny, "stab": stab}
    fam = FAMILIES.get("cgan")(build_config({**settings, "train": {"batch_size": 8}}, spec), spec)
    G, D = fam.networks()
    with torch.no_grad():
        D.project.weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    phase = {"Loss/D_gp": fam.d_loss, "Loss/G_fm": fam.g_loss}.get(key, fam.d_reg_loss)
    values = []
    for shift in (0, 3):
        batch = d_batch()
        batch["y"] = (batch["y"] + shift) % 10
        _, stats = phase(G, D, batch, torch.Generator().manual_seed(0))
        values.append(stats[key].item())
    assert all(np.isfinite(values))
    if key != "Loss/G_fm":  # feature matching compares phi(x), which does not depend on y
        assert values[0] != pytest.approx(values[1])


@pytest.mark.parametrize("loss", ["wgan-gp", "hinge", "wgan", "lsgan", "minimax"])
def test_every_loss_gives_finite_gradients_with_packs(loss):
    spec = DIGITS
    settings = {"model": "cgan", "loss": loss, "net": FAMILIES.get("cgan").tiny, "stab": {"pac": 2}}
    fam = FAMILIES.get("cgan")(build_config({**settings, "train": {"batch_size": 8}}, spec), spec)
    G, D = fam.networks()
    for phase, net in ((fam.d_loss, D), (fam.g_loss, G)):
        loss_value, _ = phase(G, D, d_batch(), torch.Generator().manual_seed(0))
        loss_value.backward()
        assert torch.isfinite(loss_value) and all(torch.isfinite(p.grad).all() for p in net.parameters())


# --------------------------------------------------------------------------- runs


def test_same_seed_same_run(tmp_path):
    a = train(tmp_path, "a")
    b = train(tmp_path, "b")
    for p, q in zip(a.trainer.G.state_dict().values(), b.trainer.G.state_dict().values()):
        assert torch.equal(p, q)
    assert torch.equal(a.sample(10, labels=[7] * 10), b.sample(10, labels=[7] * 10))


def test_save_load_sample_round_trip(tmp_path, capsys):
    gan = train(tmp_path, "run", extra=["train.n_grid=100"])
    loaded = ganforge.load(tmp_path / "run")
    labels = torch.tensor([4, 4, 9, 0, 1])
    assert torch.equal(gan.sample(5, seed=2, labels=labels), loaded.sample(5, seed=2, labels=labels))
    assert torch.equal(loaded.sample(20), loaded.sample(20, labels=torch.arange(20) % 10))  # default: in turn
    for bad in ([0, 1, 10], [0.5, 1, 2], [True, False, True]):  # out of range, fractions, booleans
        with pytest.raises(ConfigError, match=r"labels must be 3 whole class numbers in \[0, 10\)"):
            loaded.sample(3, labels=bad)
    for n in (2.5, "3", True):
        with pytest.raises(ConfigError, match="n must be a whole number of at least 1"):
            loaded.sample(n)
    # The CLI: a grid with one column per class, and .npz with the labels asked for.
    assert main(["sample", str(tmp_path / "run"), "--n", "25", "--out", str(tmp_path / "grid.png")]) == 0
    w, h = Image.open(tmp_path / "grid.png").size
    assert w / h == pytest.approx((10 * 10 + 2) / (3 * 10 + 2))  # 8-px images, 2-px padding: 10 x 3
    assert main(["sample", str(tmp_path / "run"), "--n", "12", "--out", str(tmp_path / "s.npz")]) == 0
    npz = np.load(tmp_path / "s.npz")
    assert npz["x"].shape == (12, 1, 8, 8) and npz["y"].tolist() == [i % 10 for i in range(12)]
    config = json.loads((tmp_path / "run" / "run.json").read_text())
    assert config["spec"]["n_classes"] == 10
    capsys.readouterr()


def test_recipe_grid_shows_one_class_per_column():
    cfg = build_config({"model": "cgan"}, DataSpec("image", (1, 32, 32), n_classes=10))
    assert cfg.train.n_grid == 100 and round(cfg.train.n_grid**0.5) == 10  # the run writer's row length
    assert (cfg.net.g_channels, cfg.net.d_channels, cfg.train.steps) == (32, 32, 1500)


@pytest.mark.slow
def test_ring8_classes_land_on_their_modes(tmp_path):
    """A known answer: on ring8 class k is the k-th Gaussian, so samples asked for k should lie
    nearest to centre k (all of them, measured: 1.00 after 600 steps), most within 3 std (0.65;
    the ring's std is 1 % of its radius, and 600 steps are a fifth of the recipe's)."""
    gan = ganforge.train(data="ring8", model="cgan", out=tmp_path / "ring", steps=600, progress=False)
    ds = load_dataset(gan.cfg.data)
    y = torch.arange(800) % 8
    x = gan.sample(800, labels=y)
    nearest = torch.cdist(x, ds.modes).argmin(1)
    close = (x - ds.modes[y]).norm(dim=1) < 3 * ds.mode_std
    assert (nearest == y).double().mean() > 0.95 and close.double().mean() > 0.5
