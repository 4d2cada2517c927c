"""The style-based family `stylegan` and its layers (ganforge.nn.style): modulation and
demodulation against per-sample references, equalized learning rate, the truncation trick, style
mixing, and a tiny run through the public API (determinism, resume, save / load / sample)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ganforge
from ganforge.api import build_config, truncated
from ganforge.cli import main
from ganforge.errors import ConfigError
from ganforge.families import FAMILIES, DataSpec
from ganforge.families.stylegan import StyleGenerator, mix_styles, truncate
from ganforge.nn.style import (
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    demodulation,
    modulated_conv2d,
    pixel_norm,
)

from .conftest import tiny_overrides

GREY16 = DataSpec("image", (1, 16, 16))
RGB8 = DataSpec("image", (3, 8, 8))


def family(spec=GREY16, loss="ns", **net):
    settings = {"model": "stylegan", "loss": loss, "net": {**FAMILIES.get("stylegan").tiny, **net}}
    return FAMILIES.get("stylegan")(build_config(settings, spec), spec)


def generator(spec=GREY16, **net) -> StyleGenerator:
    torch.manual_seed(0)
    G, _ = family(spec, **net).build()
    return G


# --------------------------------------------------------------------------- layers


def reference_modulated_conv(x, weight, s, demodulate, eps=1e-8):
    """StyleGAN2 Eq. 1-3 sample by sample, with F.conv2d on explicitly built weights."""
    out = []
    for b in range(x.shape[0]):
        w = weight * s[b].view(1, -1, 1, 1)  # w'_ijk = s_i w_ijk
        if demodulate:
            sigma = torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + eps)  # one per output channel j
            w = w / sigma
        out.append(F.conv2d(x[b : b + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(out)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("kernel", [3, 1])
def test_modulated_conv_is_the_per_sample_convolution(demodulate, kernel):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 6, 6, generator=gen)
    weight = torch.randn(7, 5, kernel, kernel, generator=gen)
    s = torch.rand(4, 5, generator=gen) * 2 + 0.1
    expected = reference_modulated_conv(x, weight, s, demodulate)
    out = modulated_conv2d(x, weight, s, demodulate)
    assert out.shape == (4, 7, 6, 6)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # channels-last inputs give the same result
    out_cl = modulated_conv2d(x.contiguous(memory_format=torch.channels_last), weight, s, demodulate)
    torch.testing.assert_close(out_cl, expected, atol=1e-5, rtol=1e-5)


def test_demodulated_weights_have_unit_norm_per_output_channel_and_sample():
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 4, 3, 3, generator=gen) * 3
    s = torch.rand(5, 4, generator=gen) * 10
    d = demodulation(weight, s)  # (B, O)
    modulated = weight.unsqueeze(0) * s[:, None, :, None, None]  # (B, O, I, kh, kw): s_i w_jik, Eq. 1
    norms = (modulated * d[:, :, None, None, None]).square().sum(dim=(2, 3, 4)).sqrt()  # over (in, kh, kw)
    torch.testing.assert_close(norms, torch.ones(5, 6), atol=1e-6, rtol=0)


def test_equalized_lr_effective_weights():
    """W is stored N(0, 1/lr_mul^2) and used as W * lr_mul / sqrt(fan_in); the bias as b * lr_mul."""
    torch.manual_seed(0)
    fc = EqualLinear(400, 300, lr_mul=0.01, bias_init=0.5)
    assert fc.weight.std().item() == pytest.approx(100.0, rel=0.02)
    x = torch.randn(3, 400)
    expected = x @ (fc.weight * 0.01 / math.sqrt(400)).T + fc.bias * 0.01
    torch.testing.assert_close(fc(x), expected)
    torch.testing.assert_close(fc.bias * 0.01, torch.full((300,), 0.5))  # effective bias = bias_init
    conv = EqualConv2d(8, 4, 3)
    assert conv.weight.std().item() == pytest.approx(1.0, rel=0.1) and not conv.bias.any()
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight / math.sqrt(8 * 9), conv.bias, padding=1))
    mod = ModulatedConv2d(8, 4, 1, w_dim=6, demodulate=False)
    torch.testing.assert_close(mod.affine.bias, torch.ones(8))  # styles start around 1
    w = torch.randn(2, 6)
    expected = reference_modulated_conv(x, mod.weight / math.sqrt(8), mod.affine(w), demodulate=False)
    torch.testing.assert_close(mod(x, w), expected, atol=1e-5, rtol=1e-5)


def test_pixel_norm_gives_unit_second_moment():
    z = torch.randn(4, 16) * torch.tensor([[0.1], [1.0], [5.0], [50.0]])
    torch.testing.assert_close(pixel_norm(z).square().mean(1), torch.ones(4))


# --------------------------------------------------------------------------- the generator


def test_w_avg_tracks_the_mean_w_in_training_only():
    G = generator(style_mixing=0.0, w_avg_decay=0.9)
    G.w_avg.fill_(1.0)
    z = torch.randn(6, 8)
    with torch.no_grad():
        w = G.mapping(z)
        G(z)
    torch.testing.assert_close(G.w_avg, 0.9 * torch.ones(8) + 0.1 * w.mean(0))
    before = G.w_avg.clone()
    G.eval()
    with torch.no_grad():
        G(z)
    assert torch.equal(G.w_avg, before)


def test_truncation_psi_zero_gives_the_image_of_w_avg_and_psi_one_changes_nothing():
    G = generator()
    G.w_avg.copy_(torch.randn(8))
    G.eval()
    z = torch.randn(5, 8)
    with torch.no_grad():
        x0 = G(z, psi=0.0)
        image_of_w_avg = G.synthesis(G.w_avg.expand(1, G.n_ws, -1))
        assert torch.equal(G.styles(z, psi=1.0), G.mapping(z).unsqueeze(1).expand(-1, G.n_ws, -1))
        half = G.styles(z, psi=0.5)[:, 0]
    assert all(torch.equal(x0[i], x0[0]) for i in range(5))
    torch.testing.assert_close(x0[:1], image_of_w_avg, atol=1e-6, rtol=0)
    torch.testing.assert_close(half, G.w_avg + 0.5 * (G.mapping(z).detach() - G.w_avg))
    torch.testing.assert_close(truncate(torch.ones(2, 3), torch.zeros(3), 0.7), torch.full((2, 3), 0.7))


def test_style_mixing_switches_latents_at_one_cutoff():
    G = generator(style_mixing=1.0)
    z = torch.randn(4, 8)
    cutoffs = set()
    for seed in range(12):
        torch.manual_seed(seed)
        with torch.no_grad():
            ws, w1 = G.styles(z), G.mapping(z)
        differs = [not torch.allclose(ws[:, i], w1) for i in range(G.n_ws)]
        cutoff = differs.index(True)
        assert 1 <= cutoff < G.n_ws and all(differs[cutoff:])  # w1 before the crossover, w2 after
        assert all(torch.equal(ws[:, i], ws[:, cutoff]) for i in range(cutoff, G.n_ws))
        cutoffs.add(cutoff)
    assert len(cutoffs) > 1
    G.style_mixing = 0.0
    with torch.no_grad():
        assert torch.equal(G.styles(z), G.mapping(z).unsqueeze(1).expand(-1, G.n_ws, -1))
    w1, w2 = torch.zeros(2, 3), torch.ones(2, 3)
    assert mix_styles(w1, w2, 5, 2)[:, :, 0].tolist() == [[0, 0, 1, 1, 1]] * 2


def test_each_layer_takes_its_own_latent():
    """Layer i (in synthesis order) is modulated by w_i; a toRGB shares w with the next block's
    first conv (StyleGAN2's layout): at 16 px, n_ws = 6 = 5 convs + 1."""
    G = generator()
    G.eval()
    assert G.n_ws == 6
    seen: list[tuple[str, torch.Tensor]] = []
    for name, module in G.named_modules():
        if isinstance(module, ModulatedConv2d):
            module.affine.register_forward_hook(lambda m, args, out, name=name: seen.append((name, args[0])))
    ws = torch.randn(2, G.n_ws, 8)
    with torch.no_grad():
        G.synthesis(ws)
    expected = [
        ("blocks.0.layers.0.conv", 0),
        ("blocks.0.to_rgb.conv", 1),
        ("blocks.1.layers.0.conv", 1),
        ("blocks.1.layers.1.conv", 2),
        ("blocks.1.to_rgb.conv", 3),
        ("blocks.2.layers.0.conv", 3),
        ("blocks.2.layers.1.conv", 4),
        ("blocks.2.to_rgb.conv", 5),
    ]
    assert [name for name, _ in seen] == [name for name, _ in expected]
    for (_, w), (_, i) in zip(seen, expected):
        assert torch.equal(w, ws[:, i])


def test_noise_is_random_in_training_and_fixed_in_eval():
    G = generator(style_mixing=0.0)
    for layer in G.modules():
        if hasattr(layer, "strength"):
            layer.strength.data.fill_(1.0)
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert not torch.equal(G(z), G(z))
        G.eval()
        assert torch.equal(G(z), G(z))
        G.train()
    assert not any(hasattr(m, "strength") for m in generator(noise=False).modules())


def test_channels_last_gives_the_same_images():
    G = generator(RGB8)
    G.eval()
    z = torch.randn(3, 8)
    with torch.no_grad():
        x = G(z)
        G.to(memory_format=torch.channels_last)
        torch.testing.assert_close(G(z), x, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- config and recipe


@pytest.mark.parametrize(
    ("net", "message"),
    [
        ({"style_mixing": 1.5}, r"net.style_mixing must lie in \[0, 1\]"),
        ({"truncation_psi": 2.0}, r"net.truncation_psi must lie in \[-1, 1\]"),
        ({"w_avg_decay": 1.0}, r"net.w_avg_decay must lie in \[0, 1\)"),
        ({"n_mapping": 0}, "net.n_mapping must be at least 1"),
    ],
)
def test_bad_config_values_fail_in_one_line(net, message):
    with pytest.raises(ConfigError, match=message):
        family(**net)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 30, 30), r"s\*2\^k"),
        ((1, 256, 256), "8 to 128 px, got 256x256"),
        ((1, 16, 32), "square images"),
        ((1, 4, 4), "8 to 128 px"),
    ],
)
def test_unsupported_resolutions_are_refused(shape, message):
    spec = DataSpec("image", shape)
    with pytest.raises(ConfigError, match=message):
        family(spec).build()


def test_recipe_uses_lazy_r1_with_the_non_saturating_loss():
    cfg = build_config({"model": "stylegan"}, DataSpec("image", (1, 32, 32)))
    assert cfg.loss.name == "ns" and cfg.stab.r1_gamma > 0 and cfg.stab.reg_every == 16
    assert (cfg.train.beta1, cfg.train.beta2) == (0.0, 0.99)
    gp = build_config({"model": "stylegan", "loss": "wgan-gp"}, DataSpec("image", (1, 32, 32)))
    assert gp.stab.r1_gamma == 0 and gp.train.n_dis == 5


def test_truncation_is_refused_for_models_without_it():
    spec = DataSpec("image", (1, 16, 16))
    dcgan = FAMILIES.get("dcgan")(build_config({"model": "dcgan"}, spec), spec)
    with pytest.raises(ConfigError, match="has no truncation trick"), truncated(dcgan, 0.5):
        pass
    fam = family()
    with pytest.raises(ConfigError, match="truncation_psi must lie"), truncated(fam, 3.0):
        pass
    assert fam.net.truncation_psi == 1.0


# --------------------------------------------------------------------------- runs


def train(tmp_path, name, steps=3, extra=(), **kw):
    return ganforge.train(
        data="digits",
        model="stylegan",
        out=tmp_path / name,
        steps=steps,
        progress=False,
        overrides=[
            *tiny_overrides("stylegan"),
            *["data.resolution=8", "data.limit=48", "train.batch_size=8", "stab.reg_every=2"],
            *["monitor.enabled=false", *extra],
        ],
        **kw,
    )


def test_tiny_run_samples_loads_and_is_deterministic(tmp_path):
    gan = train(tmp_path, "a", extra=["train.n_grid=4"])
    run = tmp_path / "a"
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    assert list((run / "checkpoints").glob("step_*.safetensors")) and (run / "samples").is_dir()
    assert "Loss/D_r1" in (run / "stats.jsonl").read_text()
    x = gan.sample(6, seed=2)
    assert x.shape == (6, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, gan.sample(6, seed=2)) and not torch.equal(x, gan.sample(6, seed=3))
    loaded = ganforge.load(run)
    assert torch.equal(loaded.sample(6, seed=2), x)
    same = loaded.sample(4, seed=5, truncation=0.0)
    assert all(torch.equal(same[i], same[0]) for i in range(4))
    assert torch.equal(loaded.sample(6, seed=2, truncation=1.0), x)
    assert loaded.trainer.family.net.truncation_psi == 1.0  # the run's setting is back
    assert (
        main(
            [
                "sample",
                str(run),
                "--n",
                "4",
                "--seed",
                "5",
                "--truncation",
                "0",
                "--out",
                str(tmp_path / "t.npy"),
            ]
        )
        == 0
    )
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "t.npy")), same)
    assert main(["sample", str(run), "--n", "4", "--truncation", "3", "--out", str(tmp_path / "u.npy")]) == 2
    assert not (tmp_path / "u.npy").exists()
    twin = train(tmp_path, "b")
    for p, q in zip(gan.trainer.G.state_dict().values(), twin.trainer.G.state_dict().values()):
        assert torch.equal(p, q)


def test_resume_is_exact(tmp_path):
    """G draws its noise and mixing from the global RNG, which checkpoints carry."""
    full = train(tmp_path, "full", steps=4)
    train(tmp_path, "split", steps=2)
    split = ganforge.train(out=tmp_path / "split", steps=4, resume=True, progress=False)
    for (k, a), b in zip(full.trainer.G.state_dict().items(), split.trainer.G.state_dict().values()):
        assert torch.equal(a, b), k


def test_every_stabiliser_composes(tmp_path):
    """The shared D wrapper keeps pac / mbstd / mbdisc / feature matching working; spectral norm
    reaches the equalized-lr convolutions and linear layers (nn.Conv2d / nn.Linear subclasses)."""
    stabilisers = [
        *["stab.spectral_norm=true", "stab.g_spectral_norm=true", "stab.r1_gamma=1", "stab.r2_gamma=1"],
        *["stab.label_smoothing=0.1", "stab.instance_noise=0.1", "stab.mbstd=true", "stab.mbdisc=4"],
        *[
            "stab.feature_matching=0.5",
            "stab.pac=2",
            "stab.unrolled_steps=1",
            "stab.diffaug=color,translation",
        ],
    ]
    gan = train(tmp_path, "stab", steps=2, extra=stabilisers)
    D = gan.trainer.D
    assert torch.nn.utils.parametrize.is_parametrized(D.features.from_rgb, "weight")
    records = (tmp_path / "stab" / "stats.jsonl").read_text()
    assert "Loss/D_r2" in records and "Loss/G_fm" in records and "NaN" not in records
