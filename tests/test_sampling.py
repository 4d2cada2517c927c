"""Sampling: Jacobian norms on known functions, and Jacobian-based truncation (JBTS) on a
generator whose steep region is known by construction."""

import subprocess
import sys

import pytest
import torch

import ganforge
from ganforge.api import build_config
from ganforge.engine import Trainer
from ganforge.engine.sampling import jacobian_norm, sample_batches
from ganforge.errors import ConfigError
from ganforge.families import FAMILIES, DataSpec


def test_jacobian_norm_is_exact_on_a_quadratic_map():
    # f(z) = (z0^2, z0 z1): J = [[2 z0, 0], [z1, z0]], ||J||_F^2 = 5 z0^2 + z1^2
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y, norm = jacobian_norm(lambda v: torch.stack([v[:, 0] ** 2, v[:, 0] * v[:, 1]], 1), z)
    assert torch.equal(y[:, 0], z[:, 0] ** 2)
    torch.testing.assert_close(norm, (5 * z[:, 0] ** 2 + z[:, 1] ** 2).sqrt())


def test_jacobian_norm_of_image_shaped_outputs_counts_every_value():
    A = torch.randn(3 * 4 * 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = torch.randn(7, 5, dtype=torch.float64)
    _, norm = jacobian_norm(lambda v: (v @ A.t()).view(-1, 3, 4, 4), z)
    torch.testing.assert_close(norm, torch.full((7,), float(A.norm()), dtype=torch.float64))


def test_hutchinson_estimate_is_unbiased_for_large_latents():
    # 32-d latent: 4 random probes per row. For f(z) = 3 z, ||J||_F^2 = 9 * 32 exactly, and the
    # estimate's mean over many rows must approach it (its per-row std is 12.5 %).
    z = torch.zeros(4000, 32, dtype=torch.float64)
    _, norm = jacobian_norm(lambda v: 3 * v, z, generator=torch.Generator().manual_seed(2))
    assert norm.std() > 0  # an estimate, not the exact value
    assert abs(norm.pow(2).mean().item() / (9 * 32) - 1) < 0.02


def band_generator(tmp_path):
    """A trained-model handle whose G is x = (10 clamp(z0, -0.1, 0.1), z1): ||dG/dz||_F is
    sqrt(101) where |z0| < 0.1 and 1 elsewhere, so the median is 1 and JBTS at any limit in
    (1, 10) rejects exactly the band |z0| < 0.1 (8 % of the draws)."""
    gan = ganforge.train(
        data="ring8",
        out=tmp_path / "run",
        steps=1,
        progress=False,
        overrides=["net.g_layers=1", "net.g_hidden=4", "train.ema_decay=0", "monitor.enabled=false"],
    )
    lin1, lin2 = gan.trainer.G.net[0], gan.trainer.G.net[2]
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, -1]]))
        lin1.bias.copy_(torch.tensor([0.1, -0.1, 0, 0]))
        lin2.weight.copy_(torch.tensor([[10.0, -10, 0, 0], [0, 0, 1, -1]]))
        lin2.bias.copy_(torch.tensor([-1.0, 0]))
    return gan


def test_jbts_rejects_exactly_the_steep_band(tmp_path):
    gan = band_generator(tmp_path)
    plain = gan.sample(4000, seed=3)
    inside = plain[:, 0].abs() < 1 - 1e-6  # drawn from the steep band
    assert 0.05 < inside.double().mean() < 0.11  # P(|z0| < 0.1) = 0.0797
    cut = gan.sample(4000, seed=3, jacobian_limit=5)
    torch.testing.assert_close(cut[:, 0].abs(), torch.ones(4000))  # no sample from the band survives
    torch.testing.assert_close(cut[~inside], plain[~inside])  # accepted draws are kept where they were
    # the replacements are fresh draws: their second coordinate (z1 itself) looks Gaussian
    assert abs(cut[inside, 1].std().item() - 1) < 0.3
    torch.testing.assert_close(gan.sample(4000, seed=3, jacobian_limit=5), cut)  # seeded: deterministic
    assert torch.equal(gan.sample(4000, seed=3, jacobian_limit=0), plain)  # 0 = off


def test_jbts_batches_do_not_change_the_samples(tmp_path):
    gan = band_generator(tmp_path)
    a = torch.cat([x for x, _ in sample_batches(gan.trainer, 1000, 4, 1000, jacobian_limit=5)])
    b = torch.cat([x for x, _ in sample_batches(gan.trainer, 1000, 4, 97, jacobian_limit=5)])
    assert torch.equal(a, b)


def test_jacobian_limit_comes_from_the_run_config(tmp_path):
    gan = band_generator(tmp_path)
    gan.trainer.cfg.sample.jacobian_limit = 5.0
    assert torch.equal(gan.sample(500, seed=1), gan.sample(500, seed=1, jacobian_limit=5))
    assert not torch.equal(gan.sample(500, seed=1), gan.sample(500, seed=1, jacobian_limit=0))


@pytest.mark.parametrize("limit", [0.5, 1.0, -2.0])
def test_jacobian_limit_must_exceed_one(tmp_path, limit):
    gan = band_generator(tmp_path)
    with pytest.raises(ConfigError, match="jacobian_limit"):
        gan.sample(10, jacobian_limit=limit)
    with pytest.raises(ConfigError, match="sample.jacobian_limit"):
        build_config({"model": "mlp", "sample": {"jacobian_limit": limit}}, DataSpec("points", (2,)))


def test_cli_sample_with_a_bad_jacobian_limit_is_one_line(tmp_path):
    band_generator(tmp_path)
    out = tmp_path / "x.npy"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganforge",
            "sample",
            str(tmp_path / "run"),
            "--out",
            str(out),
            "--jacobian-limit",
            "0.5",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "jacobian_limit" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("model", [m for m in FAMILIES.names() if "image" in FAMILIES.get(m).data_kinds])
def test_jbts_runs_on_every_image_family(model):
    """Forward-mode JVPs go through every family's generator (batch norm, conditional batch
    norm, modulated convolutions, fused up-convolutions), with labels kept for conditional ones."""
    family_cls = FAMILIES.get(model)
    spec = DataSpec("image", (1, 8, 8), n_classes=3 if family_cls.conditional else 0)
    cfg = build_config({"model": model, "net": family_cls.tiny}, spec)
    trainer = Trainer(cfg, spec)
    labels = torch.arange(20) % 3 if family_cls.conditional else None
    batches = list(sample_batches(trainer, 20, 0, 8, labels, jacobian_limit=1.5))
    x = torch.cat([b for b, _ in batches])
    assert x.shape == (20, 1, 8, 8) and torch.isfinite(x).all()
    if labels is not None:
        assert torch.equal(torch.cat([y for _, y in batches]), labels)


def test_evaluate_records_and_overrides_the_jacobian_limit(tmp_path):
    from ganforge.evaluate import evaluate

    ganforge.train(
        data="ring8",
        out=tmp_path / "run",
        steps=50,
        progress=False,
        overrides=["monitor.enabled=false", "net.g_hidden=16", "net.d_hidden=16"],
    )
    assert evaluate(tmp_path / "run", metrics="modes", n=200)["jacobian_limit"] == 20.0  # the points recipe
    assert evaluate(tmp_path / "run", metrics="modes", n=200, jacobian_limit=0)["jacobian_limit"] == 0.0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    with pytest.raises(ConfigError, match="jacobian_limit"):
        evaluate(tmp_path / "run", metrics="modes", n=200, jacobian_limit=0.5)
    assert (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() == lines  # nothing appended


def test_jbts_on_a_generator_with_nan_outputs_is_one_clear_error(tmp_path):
    from ganforge.errors import GanforgeError

    gan = band_generator(tmp_path)
    with torch.no_grad():
        gan.trainer.G.net[2].weight[0, 0] = float("nan")
    with pytest.raises(GanforgeError, match="Jacobian truncation"):
        gan.sample(10, jacobian_limit=5)
    assert gan.sample(10, jacobian_limit=0)[:, 0].isnan().all()  # raw sampling still answers
