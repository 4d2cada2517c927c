"""The training monitor: each failure mode provoked on purpose is reported; a healthy run is not.

Calibration (healthy runs: ring8 and grid25 with the full mlp recipe for 1-3k steps; tiny MLPs on
ring8/grid25/moons/spiral with ns, minimax, lsgan, wgan, wgan-gp, hinge for 600 steps, several
seeds; tiny DCGAN on digits): the largest oscillation score stays <= 0.65 of the threshold; Grad/G
never falls below 0.04x its largest early value (threshold 0.01x, and for logit losses only while
D/real - D/fake >= 0.9, which healthy runs never near: <= 0.6); the diversity ratio is above 0.3
after 500 steps (it can dip to 0.15 around step 200 of a run that then recovers, hence the warm-up
and two failed checks in a row). One tiny hinge run without spectral norm (seed 0, lr 1e-3) is
reported as oscillating, rightly: it runs a limit cycle of ~200 steps, D/fake swinging -0.8..+0.7.
"""

import io
import json
import math

import pytest
import torch

import ganforge
from ganforge.api import build_config, data_config, spec_of, user_settings
from ganforge.config import MonitorConfig
from ganforge.data import load_dataset
from ganforge.diagnostics import (
    KINDS,
    Monitor,
    check_divergence,
    check_mode_collapse,
    check_oscillation,
    check_vanishing,
    cure,
    mean_pairwise_distance,
)
from ganforge.engine import Callback, Trainer
from ganforge.engine.run import Progress
from ganforge.errors import ConfigError
from ganforge.families import DataSpec

from .conftest import tiny_overrides

# --- helpers ---------------------------------------------------------------------------------------


def train(tmp_path, name="run", steps=20, extra=(), loss=None, callbacks=()):
    return ganforge.train(
        data="ring8",
        model="mlp",
        loss=loss,
        out=tmp_path / name,
        steps=steps,
        progress=False,
        overrides=[*tiny_overrides("mlp"), "data.n_points=512", *extra],
        callbacks=callbacks,
    )


def findings(run_dir):
    path = run_dir / "diagnostics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def stats(run_dir):
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def make_trainer(overrides=()):
    settings = user_settings(
        None, [*tiny_overrides("mlp"), "data.n_points=256", *overrides], data="ring8", model="mlp"
    )
    ds = load_dataset(data_config(settings))
    spec = spec_of(ds)
    return Trainer(build_config(settings, spec), spec, ds)


def rec(step, loss_d=1.35, loss_g=0.75, real=0.52, fake=0.47, grad_g=1.0, grad_d=1.0):
    return {
        "step": step,
        "D/fake": fake,
        "D/real": real,
        "Grad/D": grad_d,
        "Grad/G": grad_g,
        "Loss/D": loss_d,
        "Loss/G": loss_g,
        "time": 0.0,
    }


def healthy(start, n):
    """Noisy records of a GAN near equilibrium: the losses wobble, D outputs hover near 1/2."""
    g = torch.Generator().manual_seed(start)
    noise = (0.05 * torch.randn(n, 4, generator=g)).tolist()
    return [
        rec(start + i, 1.35 + a, 0.75 + b, 0.52 + c / 2, 0.47 + d / 2) for i, (a, b, c, d) in enumerate(noise)
    ]


def oscillating(start, n):
    """D alternately wins (D(x) ~ 1, D(G(z)) ~ 0) and is fooled; the losses swing with it."""
    win = dict(loss_d=0.2, loss_g=4.0, real=0.95, fake=0.05)
    fooled = dict(loss_d=2.5, loss_g=0.3, real=0.4, fake=0.8)
    return [rec(start + i, **(win if i % 2 else fooled)) for i in range(n)]


# --- divergence ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [("Loss/G", math.nan), ("Grad/D", math.inf), ("D/real", math.nan), ("Loss/D", -math.inf)],
)
def test_divergence_non_finite(key, value):
    r = rec(10)
    r[key] = value
    assert key in check_divergence(r, {}, 1e3)


def test_divergence_loss_explosion():
    ref = {"Loss/D": 1.4, "Loss/G": 0.7}
    assert check_divergence(rec(10), ref, 1e3) is None
    assert "Loss/D" in check_divergence(rec(10, loss_d=5e3), ref, 1e3)
    assert "Loss/G" in check_divergence(rec(10, loss_g=-2e3), ref, 1e3)
    # a loss that starts large (a critic on wide data) is judged against its own early size
    assert check_divergence(rec(10, loss_d=5e3), {"Loss/D": 40.0}, 1e3) is None


def test_divergence_end_to_end(tmp_path):
    """Absurd learning rates blow the weights up within a few steps."""
    train(tmp_path, steps=8, extra=["train.g_lr=1e3", "train.d_lr=1e3"])
    found = findings(tmp_path / "run")
    assert [f["kind"] for f in found] == ["divergence"]  # reported once, though it never recovers
    assert found[0]["step"] <= 3 and "train.g_lr" in found[0]["cure"]
    report = (tmp_path / "run" / "diagnostics.md").read_text()
    assert "divergence" in report and "lower learning rates" in report


def test_divergence_when_the_first_record_has_already_exploded(tmp_path):
    train(tmp_path, steps=10, extra=["train.g_lr=1e3", "train.d_lr=1e3", "train.log_every=5"])
    assert [f["kind"] for f in findings(tmp_path / "run")] == ["divergence"]


# --- vanishing gradients ---------------------------------------------------------------------------


def test_vanishing_needs_tiny_grad_and_a_confident_D():
    saturated = rec(600, grad_g=1e-4, real=0.999, fake=1e-4)
    assert "Grad/G" in check_vanishing(saturated, 0.5, True, 1e-2, 0.9)
    assert check_vanishing(rec(600, grad_g=1e-4), 0.5, True, 1e-2, 0.9) is None  # D is not winning
    assert check_vanishing(rec(600, grad_g=0.1, real=0.999, fake=1e-4), 0.5, True, 1e-2, 0.9) is None
    assert check_vanishing(rec(600, grad_g=1e-4), 0.5, False, 1e-2, 0.9) is not None  # critics: grad alone


def test_vanishing_gradients_end_to_end(tmp_path):
    """Saturating minimax: G starts far from the data (disjoint supports, Arjovsky & Bottou 2017)
    and barely moves (g_lr tiny), while a fast D (d_lr high, n_dis=5) separates them perfectly:
    log(1 - D(G(z))) saturates and Grad/G falls 100x within a few dozen steps."""

    class FarGenerator(Callback):
        def on_train_start(self, trainer):
            with torch.no_grad():
                for G in (trainer.G, trainer.G_ema):
                    G.net[-1].bias.fill_(8.0)  # all fakes around (8, 8); the ring has radius 1

    train(
        tmp_path,
        steps=60,
        loss="minimax",
        extra=["train.d_lr=0.05", "train.g_lr=1e-6", "train.n_dis=5", "train.batch_size=64"]
        + ["train.log_every=2", "monitor.warmup=10"],
        callbacks=[FarGenerator()],
    )
    found = [f for f in findings(tmp_path / "run") if f["kind"] == "vanishing_gradients"]
    assert len(found) == 1
    assert "near-perfect" in found[0]["message"] and "--loss ns" in found[0]["cure"]


# --- mode collapse ---------------------------------------------------------------------------------


def test_mode_collapse_rules():
    assert "0.10x" in check_mode_collapse(0.1, None, None, 0.0, 0, 0.3, 0.5)
    assert check_mode_collapse(0.9, 8, 8, 0.6, 8, 0.3, 0.5) is None
    assert "2/8 modes" in check_mode_collapse(0.6, 2, 8, 0.6, 8, 0.3, 0.5)  # diverse enough, but 8 -> 2
    assert check_mode_collapse(0.6, 2, 8, 0.05, 8, 0.3, 0.5) is None  # smeared samples: counts are noise
    assert check_mode_collapse(0.6, 1, 8, 0.6, 3, 0.3, 0.5) is None  # never had enough modes to lose


def test_mean_pairwise_distance():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(x) == pytest.approx(5.0)
    assert mean_pairwise_distance(torch.ones(16, 1, 4, 4)) == pytest.approx(0.0, abs=1e-3)


def test_mode_collapse_end_to_end(tmp_path):
    """A G that ignores z (zero last-layer weight, bias on one ring centre, frozen by a tiny g_lr)."""

    class Collapse(Callback):
        def on_train_start(self, trainer):
            with torch.no_grad():
                for G in (trainer.G, trainer.G_ema):
                    G.net[-1].weight.zero_()
                    G.net[-1].bias.copy_(torch.tensor([1.0, 0.0]))  # centre 0 of ring8

    train(
        tmp_path,
        steps=30,
        extra=["train.g_lr=1e-12", "train.log_every=5", "monitor.warmup=10"],
        callbacks=[Collapse()],
    )
    run_dir = tmp_path / "run"
    found = findings(run_dir)
    assert [f["kind"] for f in found] == ["mode_collapse"]
    assert "1/8 modes" in found[0]["message"] and "stab.pac" in found[0]["cure"]
    records = stats(run_dir)
    assert all(r["Diag/modes"] == 1 and r["Diag/diversity"] < 1e-3 for r in records)
    assert found[0]["step"] == 20  # two failed checks in a row after the warm-up: steps 15 and 20


# --- oscillation -----------------------------------------------------------------------------------


def test_oscillation_detected_on_swinging_records():
    message = check_oscillation(oscillating(1, 10), {}, True, 0.25, 0.5)
    assert "Loss/D" in message and "D/real - D/fake" in message


def test_oscillation_not_raised_on_noise_or_a_trend():
    assert check_oscillation(healthy(1, 10), {}, True, 0.25, 0.5) is None
    falling = [
        rec(i, loss_d=3.0 - 0.3 * i + 0.3 * (i % 2), loss_g=3.0 - 0.3 * i, real=0.9 - 0.6 * (i % 2))
        for i in range(10)
    ]
    assert check_oscillation(falling, {}, True, 0.25, 0.5) is None  # large swings, but learning


def test_oscillation_for_critic_losses():
    swinging = [
        rec(
            i,
            loss_d=(-4.0 if i % 2 else 3.0),
            loss_g=(2.0 if i % 2 else -1.5),
            real=2 - 4 * (i % 2),
            fake=-2 + 4 * (i % 2),
        )
        for i in range(10)
    ]
    assert "size of D's outputs" in check_oscillation(swinging, {}, False, 0.25, 0.5)
    steady = [rec(i, loss_d=-1.0 - 0.01 * (i % 2), loss_g=-3.0, real=4.0, fake=3.0) for i in range(10)]
    assert check_oscillation(steady, {}, False, 0.25, 0.5) is None


# --- cures --------------------------------------------------------------------------------------------


def test_cures_name_flags_and_skip_what_is_already_on():
    settings = user_settings(
        None, ["stab.spectral_norm=true", "loss.name=minimax"], data="ring8", model="mlp"
    )
    cfg = build_config(settings, DataSpec("points", (2,), variance=0.5))  # ring8's variance: R1 on
    text = cure("vanishing_gradients", cfg, images=False)
    assert "--loss ns" in text and "train.n_dis=1" in text
    assert "stab.r1_gamma" not in text  # the ring8 recipe has R1 on already
    assert "spectral_norm" not in text and "diffaug" not in text  # already on; no images to augment
    no_r1 = build_config(
        user_settings(None, ["stab.r1_gamma=0"], data="ring8", model="mlp"), DataSpec("points", (2,))
    )
    assert "0.02 x the data's per-dimension variance" in cure("mode_collapse", no_r1, images=False)
    image_cure = cure("mode_collapse", no_r1, images=True)
    assert "--set stab.r1_gamma=1;" in image_cure and "stab.diffaug" in image_cure
    assert all(cure(kind, cfg) for kind in KINDS)


# --- the callback: dedup, outputs, resume ------------------------------------------------------------


def test_monitor_reports_once_then_again_after_recovering(tmp_path):
    trainer = make_trainer()
    out = io.StringIO()
    monitor = Monitor(MonitorConfig(warmup=10_000), run_dir=tmp_path, stream=out)
    monitor.on_train_start(trainer)
    for r in healthy(1, 10) + oscillating(11, 20):
        monitor.on_log(trainer, r)
    assert [f.kind for f in monitor.findings] == ["oscillation"]  # 11 oscillating windows, one report
    for r in healthy(31, 15) + oscillating(46, 10):
        monitor.on_log(trainer, r)
    assert [f.kind for f in monitor.findings] == ["oscillation", "oscillation"]
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ganforge monitor: step ") and "Try: " in lines[0]
    assert len(findings(tmp_path)) == 2
    assert "Diag/diversity" in r  # the monitor adds its keys to the shared record


def test_monitor_writes_below_a_progress_bar():
    trainer = make_trainer()
    bar = Progress(stream=io.StringIO(), interactive=True)
    monitor = Monitor(MonitorConfig(warmup=10_000))
    trainer.callbacks = [monitor, bar]
    monitor.on_train_start(trainer)
    bad = rec(1)
    bad["Loss/G"] = math.nan
    monitor.on_log(trainer, bad)
    assert bar.stream.getvalue().startswith("\nganforge monitor: step 1: divergence: non-finite Loss/G=nan")


def test_resume_keeps_earlier_findings_and_drops_lost_steps(tmp_path):
    lines = [{"step": s, "kind": "divergence", "message": "m", "cure": "c"} for s in (3, 9)]
    (tmp_path / "diagnostics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    trainer = make_trainer()
    trainer.step = 5
    monitor = Monitor(run_dir=tmp_path)
    monitor.on_train_start(trainer)
    assert [f.step for f in monitor.findings] == [3]
    assert [f["step"] for f in findings(tmp_path)] == [3]


def test_monitor_settings_may_change_on_resume(tmp_path):
    train(tmp_path, steps=2)
    ganforge.train(out=tmp_path / "run", steps=4, resume=True, overrides=["monitor.n=32"], progress=False)


def test_monitor_can_be_switched_off(tmp_path):
    train(tmp_path, steps=3, extra=["monitor.enabled=false"])
    assert not (tmp_path / "run" / "diagnostics.md").exists()
    assert not any(k.startswith("Diag/") for r in stats(tmp_path / "run") for k in r)


@pytest.mark.parametrize("text", ["monitor.min_diversity=2", "monitor.window=1", "monitor.explode=0"])
def test_bad_monitor_settings_rejected(tmp_path, text):
    with pytest.raises(ConfigError, match="monitor"):
        train(tmp_path, steps=1, extra=[text])


# --- a healthy run -----------------------------------------------------------------------------------


def test_healthy_run_reports_nothing(tmp_path):
    """ring8 with the mlp recipe (batch 256, lr 1e-3) at tiny size, default monitor settings:
    past the 500-step warm-up, through 30 logged records of oscillation windows."""
    train(tmp_path, steps=600, extra=["data.n_points=5000", "train.log_every=20", "train.batch_size=256"])
    run_dir = tmp_path / "run"
    assert findings(run_dir) == []
    assert (
        (run_dir / "diagnostics.md").read_text().startswith("# Training diagnostics\n\nNo problems detected")
    )
    records = stats(run_dir)
    assert len(records) == 30 and all("Diag/diversity" in r and "Diag/modes" in r for r in records)
    assert records[-1]["Diag/diversity"] > 0.5


def test_healthy_digits_dcgan_window_is_not_called_oscillation():
    """The last 10 logs of a healthy 2,000-step digits DCGAN (digits-FID still falling: 1.45 ->
    1.32), whose D loss and D(x) - D(G(z)) swing as a GAN's do, raised a false alarm at 0.5."""
    losses_d = [0.579, 0.519, 0.753, 0.163, 0.091, 0.892, 0.128, 0.689, 0.773, 0.755]
    losses_g = [2.243, 2.798, 1.778, 3.184, 3.751, 2.337, 3.447, 2.231, 2.617, 1.843]
    gaps = [0.586, 0.665, 0.443, 0.85, 0.913, 0.449, 0.879, 0.548, 0.481, 0.454]
    window = [
        {"Loss/D": d, "Loss/G": g, "D/real": 0.5 + gap / 2, "D/fake": 0.5 - gap / 2}
        for d, g, gap in zip(losses_d, losses_g, gaps)
    ]
    c = MonitorConfig()
    assert check_oscillation(window, {}, True, c.osc_cv, c.osc_swing) is None
