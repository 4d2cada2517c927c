"""The training engine: determinism, exact resume, phase isolation, EMA, weight clipping."""

import json

import pytest
import torch
from safetensors.torch import load_file

import ganforge
from ganforge.api import build_config, spec_of
from ganforge.data import load_dataset
from ganforge.engine import Trainer
from ganforge.engine.trainer import ema_update

from .conftest import tiny_overrides


def run(tmp_path, name, model="mlp", data="ring8", steps=6, extra=(), **kw):
    return ganforge.train(
        data=data,
        model=model,
        out=tmp_path / name,
        steps=steps,
        progress=False,
        overrides=[*tiny_overrides(model), "data.n_points=512", "train.batch_size=16", *extra],
        **kw,
    )


def newest_checkpoint(run_dir):
    """The newest checkpoint listed in RUN/checkpoints/manifest.json."""
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    return run_dir / "checkpoints" / manifest["checkpoints"][-1]["file"]


def weights(run_dir):
    return load_file(str(newest_checkpoint(run_dir)))


def assert_same_tensors(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(("model", "data"), [("mlp", "ring8"), ("dcgan", "digits")])
def test_same_seed_same_weights(tmp_path, model, data):
    extra = ["data.resolution=8", "data.limit=64"] if data == "digits" else []
    run(tmp_path, "a", model, data, extra=extra)
    run(tmp_path, "b", model, data, extra=extra)
    assert_same_tensors(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_different_seed_different_weights(tmp_path):
    run(tmp_path, "a", seed=0)
    run(tmp_path, "b", seed=1)
    assert not torch.equal(
        weights(tmp_path / "a")["G/net.0.weight"], weights(tmp_path / "b")["G/net.0.weight"]
    )


@pytest.mark.parametrize(("model", "data", "loss"), [("mlp", "ring8", "wgan-gp"), ("dcgan", "digits", "ns")])
def test_resume_is_bitwise_identical(tmp_path, model, data, loss):
    """N steps, stop, resume to 2N == 2N uninterrupted (weights, optimisers, EMA, RNG, data order)."""
    extra = [f"loss.name={loss}", "train.n_dis=2"]
    if data == "digits":
        extra += ["data.resolution=8", "data.limit=40"]  # 40 % 16 != 0: an epoch boundary falls mid-run
    run(tmp_path, "full", model, data, steps=8, extra=extra)
    run(tmp_path, "split", model, data, steps=4, extra=extra)
    ganforge.train(out=tmp_path / "split", steps=8, resume=True, progress=False)
    assert_same_tensors(weights(tmp_path / "full"), weights(tmp_path / "split"))
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "split" / "stats.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 9))


def test_resume_refuses_changed_config(tmp_path):
    run(tmp_path, "r", steps=2)
    with pytest.raises(ganforge.GanforgeError, match="changed config.*train.g_lr"):
        ganforge.train(out=tmp_path / "r", steps=4, resume=True, overrides=["train.g_lr=0.1"], progress=False)
    gan = ganforge.train(
        out=tmp_path / "r",
        steps=4,
        resume=True,
        overrides=["train.g_lr=0.1"],
        allow_config_change=True,
        progress=False,
    )
    assert gan.step == 4 and gan.cfg.train.g_lr == 0.1


def make_trainer(overrides=(), model="mlp", data="ring8"):
    settings = ganforge.api.user_settings(
        None, [*tiny_overrides(model), "data.n_points=256", *overrides], data=data, model=model
    )
    ds = load_dataset(ganforge.api.data_config(settings))
    spec = spec_of(ds)
    return Trainer(build_config(settings, spec), spec, ds)


def test_phases_touch_only_their_side(monkeypatch):
    """n_dis D updates then one G update per step; D is unchanged by the G phase and vice versa.
    (The ring8 recipe's lazy R1 would add a D update on regularisation steps: off here.)"""
    tr = make_trainer(["train.n_dis=3", "train.ema_decay=0", "stab.r1_gamma=0"])
    d_steps, g_steps = [], []
    monkeypatch.setattr(tr.opt_D, "step", lambda *a, **k: d_steps.append(1))
    monkeypatch.setattr(tr.opt_G, "step", lambda *a, **k: g_steps.append(1))
    tr.train_step()
    assert (len(d_steps), len(g_steps)) == (3, 1)


def test_g_phase_leaves_D_unchanged():
    tr = make_trainer(["train.ema_decay=0"])
    d_before = [p.clone() for p in tr.D.parameters()]
    g_before = [p.clone() for p in tr.G.parameters()]
    batch = tr.next_batch()
    # a G phase, by hand, exactly as the loop runs it
    for p in tr.D.parameters():
        p.requires_grad_(False)
    loss, _ = tr.family.g_loss(tr.G, tr.D, batch, tr.noise)
    loss.backward()
    assert all(p.grad is None for p in tr.D.parameters())
    tr.opt_G.step()
    assert all(torch.equal(a, b) for a, b in zip(d_before, tr.D.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(g_before, tr.G.parameters()))


def test_wgan_weights_stay_clipped():
    tr = make_trainer(["loss.name=wgan", "loss.clip=0.005"])
    for _ in range(3):
        tr.train_step()
    assert max(p.abs().max().item() for p in tr.D.parameters()) <= 0.005


def test_ema_update_formula():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = 0.9 * a.weight.detach() + 0.1 * b.weight.detach()
    ema_update(a, b, 0.9)
    assert torch.allclose(a.weight, expected)


def test_sampling_uses_ema(tmp_path):
    gan = run(tmp_path, "e", steps=5, extra=["train.ema_decay=0.5"])
    assert gan.trainer.G_sample is gan.trainer.G_ema
    assert not torch.equal(gan.trainer.G_ema.net[0].weight, gan.trainer.G.net[0].weight)


def test_run_folder_contents(tmp_path):
    run(
        tmp_path,
        "r",
        model="dcgan",
        data="digits",
        steps=4,
        extra=["data.resolution=16", "data.limit=64", "train.sample_every=2", "train.log_every=2"],
    )
    root = tmp_path / "r"
    assert (root / "config.yaml").is_file() and (root / "run.json").is_file()
    assert sorted(p.name for p in (root / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    assert (root / "plots" / "training.png").stat().st_size > 1000
    records = [json.loads(line) for line in (root / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for key in ("Loss/D", "Loss/G", "D/real", "D/fake", "Grad/D", "Grad/G", "time"):
        assert key in records[0]
    assert 0 <= records[0]["D/real"] <= 1
    assert not list(root.rglob("*.tmp*"))


def test_loaded_model_samples_reproducibly(tmp_path):
    run(tmp_path, "r", model="dcgan", data="digits", steps=2, extra=["data.resolution=16", "data.limit=32"])
    gan = ganforge.load(tmp_path / "r")
    a, b = gan.sample(5, seed=3), gan.sample(5, seed=3)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, gan.sample(5, seed=4))
