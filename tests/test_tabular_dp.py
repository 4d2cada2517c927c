"""Differentially private tabular training: the per-pack gradients against torch.func, the clipping
bound and the noise scale on hand-checked cases, the accounting recorded in the model folder and the
report, determinism, the uniform sampler, and one clear error without Opacus."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
import torch

from ganforge.cli import main
from ganforge.data import Dataset
from ganforge.errors import ConfigError
from ganforge.families.tabular import Layout, critic_features
from ganforge.losses import minimax_d_loss, wgan_d_loss
from ganforge.nn import Discriminator
from ganforge.tabular import TableTransformer, TabularGAN, infer_schema, privacy
from ganforge.tabular.report import evaluate, write_report
from ganforge.tabular.sampling import UniformTableSampler

from .test_tabular import TINY, mixed

pytest.importorskip("opacus")

DP = {**TINY, "batch_size": 40, "pac": 4}


def dense(g):
    """A unit gradient as (m, *shape): factored terms summed into their outer products."""
    if isinstance(g, tuple):
        A, B = g
        return torch.einsum("mko,mki->moi", A, B)
    return g


def reference_unit_grads(D, real, fake, eps, d_loss, gp_lambda):
    """The definition, with torch.func: vmap over packs of the gradient of the pack's loss, the
    penalty's input gradient a nested grad (what Opacus's hooks cannot do)."""
    params = {k: p.detach() for k, p in D.named_parameters()}

    def loss(params, r, f, e):
        def critic(x):  # a pack (pac * W,) -> its rows (pac, W) -> D's one output
            return torch.func.functional_call(D, params, (x.reshape(D.pac, -1),)).squeeze(0)

        value = d_loss(critic(r)[None], critic(f)[None])
        if gp_lambda is not None:
            grad_x = torch.func.grad(critic)(torch.lerp(f, r, e))
            value = value + gp_lambda * (torch.linalg.vector_norm(grad_x) - 1.0) ** 2
        return value

    return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0, 0))(params, real, fake, eps)


@pytest.mark.parametrize(
    "dims, d_loss, gp_lambda",
    [([8, 6], wgan_d_loss, 10.0), ([5], minimax_d_loss, None), ([], wgan_d_loss, 10.0)],
)
def test_closed_form_pack_gradients_match_torch_func(dims, d_loss, gp_lambda):
    torch.manual_seed(0)
    pac, width, m = 3, 4, 5
    D = Discriminator(critic_features(pac * width, dims, 0.5), dims[-1] if dims else pac * width, pac).eval()
    real, fake = torch.randn(m, pac * width), torch.randn(m, pac * width)
    eps = torch.rand(m, pac, 1).expand(m, pac, width).reshape(m, -1)
    ours, _ = privacy.critic_unit_grads(D, real, fake, eps, d_loss, gp_lambda)
    ref = reference_unit_grads(D, real, fake, eps, d_loss, gp_lambda)
    assert set(ours) == set(ref)
    for k in ref:
        torch.testing.assert_close(dense(ours[k]), ref[k], rtol=1e-4, atol=1e-5)
    norms = torch.stack([v.reshape(m, -1).norm(dim=1) for v in ref.values()]).norm(dim=0)
    torch.testing.assert_close(privacy.unit_norms(ours), norms, rtol=1e-4, atol=1e-5)


def test_clipping_bound_on_a_hand_checked_case():
    # Two units; norms 5 and 0.5 (over both parameters). With C = 1 the first is scaled by 1/5,
    # the second kept: mean of [0.6, 0.8 | 0] and [0.3, 0.4 | 0] -> [0.45, 0.6 | 0].
    g = {"w": torch.tensor([[3.0, 4.0], [0.3, 0.4]]), "b": torch.zeros(2, 1)}
    out = privacy.clip_and_noise(g, sigma=0.0, clip=1.0, generator=None)
    torch.testing.assert_close(out["w"], torch.tensor([0.45, 0.6]), rtol=1e-5, atol=1e-6)
    # Factored form: unit 0 is a (x) b with |a| = 2, |b| = 3 (norm 6), unit 1 is zero.
    a = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])
    b = torch.tensor([[[0.0, 3.0, 0.0]], [[1.0, 1.0, 1.0]]])
    assert privacy.unit_norms({"W": (a, b)}).tolist() == pytest.approx([6.0, 0.0])
    out = privacy.clip_and_noise({"W": (a, b)}, sigma=0.0, clip=1.5, generator=None)
    expected = torch.zeros(2, 3)
    expected[0, 1] = 6.0 * (1.5 / 6.0) / 2  # clipped to norm 1.5, averaged over 2 units
    torch.testing.assert_close(out["W"], expected, rtol=1e-5, atol=1e-6)
    # Whatever the gradients, one unit moves the sum by at most C.
    big = {"w": torch.randn(7, 50) * 100}
    one = {"w": big["w"].clone()}
    one["w"][3] = -one["w"][3] * 10
    diff = privacy.clip_and_noise(big, 0.0, 2.0, None)["w"] - privacy.clip_and_noise(one, 0.0, 2.0, None)["w"]
    assert diff.norm() * 7 <= 2 * 2.0 + 1e-4  # replacing one unit: 2C at most


def test_noise_has_the_calibrated_scale():
    m, sigma, clip = 4, 2.0, 0.5
    g = {"w": torch.zeros(m, 200_000)}
    out = privacy.clip_and_noise(g, sigma, clip, torch.Generator().manual_seed(0))["w"] * m
    assert out.mean().abs() < 0.01 and out.std().item() == pytest.approx(sigma * clip, rel=0.01)


def test_private_fit_records_its_epsilon_within_tolerance(tmp_path):
    df = mixed(400)
    model = TabularGAN(steps=12, **DP, dp_epsilon=2.0, seed=1).fit(df)
    dp = model.privacy
    assert dp["target_epsilon"] == 2.0 and 0.97 * 2.0 <= dp["epsilon"] <= 2.0
    assert dp["delta"] == pytest.approx(1 / 400**1.1) and dp["sample_rate"] == pytest.approx(40 / 400)
    assert dp["steps"] == 12 and dp["noise_multiplier"] > 0 and dp["max_grad_norm"] == 1.0
    assert dp["epsilon"] == pytest.approx(privacy.spent_epsilon(dp["noise_multiplier"], 0.1, 12, dp["delta"]))
    # A bigger budget needs less noise; the record survives save/load (plain JSON).
    loose = TabularGAN(steps=12, **DP, dp_epsilon=20.0, dp_delta=1e-6, seed=1).fit(df).privacy
    assert loose["noise_multiplier"] < dp["noise_multiplier"] and loose["delta"] == 1e-6
    model.save(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "tabular.json").read_text())["privacy"]["epsilon"] == dp["epsilon"]
    assert TabularGAN.load(tmp_path / "m").privacy == dp
    # The logged stats of a private fit hold nothing computed from real rows.
    assert not any(k in rec for rec in model.stats for k in ("Loss/D", "D/real", "Loss/D_gp"))


def test_private_fit_is_deterministic_under_a_seed():
    df = mixed(200)
    a, b = (TabularGAN(steps=4, **DP, dp_epsilon=5.0, seed=3).fit(df) for _ in range(2))
    pd.testing.assert_frame_equal(a.sample(30), b.sample(30))
    c = TabularGAN(steps=4, **DP, dp_epsilon=5.0, seed=4).fit(df)
    assert not a.sample(30).equals(c.sample(30))


def test_uniform_sampler_draws_distinct_rows_with_their_own_condition():
    df = mixed(300)
    tr = TableTransformer(infer_schema(df)).fit(df)
    x = torch.from_numpy(tr.transform(df))
    layout = Layout(tr.spans, tr.cond_spans, tr.width)
    ids = torch.arange(len(x), dtype=x.dtype)[:, None]
    data = Dataset(x=torch.cat([x, ids], dim=1), kind="table")  # a last column naming each row
    sampler = UniformTableSampler(data.x, layout, batch_size=250, seed=0, log_frequency=False)
    batch = sampler.next_batch(data)
    assert len(torch.unique(batch["x"][:, -1])) == 250  # distinct rows
    assert (batch["c_real"].sum(1) == 1).all() and (batch["c"].sum(1) == 1).all()
    for start, off, w in zip(layout.cond_starts, layout.cond_offsets, layout.cond_widths):
        chosen = batch["c_real"][:, off : off + w].sum(1) == 1
        rows = batch["x"][chosen, start : start + w].argmax(1)
        assert (rows == batch["c_real"][chosen, off : off + w].argmax(1)).all()
    # Each row is in a batch with probability B / N whatever its values: 200 batches -> ~167 times each.
    seen = torch.zeros(len(x))
    for _ in range(200):
        seen[sampler.next_batch(data)["x"][:, -1].long()] += 1
    assert 135 < seen.min() and seen.max() < 200


def test_private_training_refuses_what_would_break_the_guarantee():
    df = mixed(30)
    with pytest.raises(ConfigError, match="lower the batch size"):
        TabularGAN(steps=2, **{**DP, "batch_size": 40}, dp_epsilon=1.0).fit(df)
    from ganforge.api import build_config
    from ganforge.families import FAMILIES, DataSpec

    spec = DataSpec("table", (3,))
    cfg = build_config(
        {"model": "tabular", "stab": {"mbstd": True}, "net": {"dp_noise_multiplier": 1.0}}, spec
    )
    with pytest.raises(ConfigError, match="packs judged independently"):
        FAMILIES.get("tabular")(cfg, spec)


def test_an_unreachable_budget_is_one_clear_error(monkeypatch):
    import opacus.accountants.utils

    def too_low(**kw):
        raise ValueError("The privacy budget is too low.")

    monkeypatch.setattr(opacus.accountants.utils, "get_noise_multiplier", too_low)
    with pytest.raises(ConfigError, match="epsilon 0.01 cannot be met over 3 steps"):
        TabularGAN(steps=3, **DP, dp_epsilon=0.01).fit(mixed(100))


def test_without_opacus_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "opacus", None)  # `import opacus` now raises ImportError
    with pytest.raises(ConfigError, match="needs Opacus.*ganforge\\[privacy\\]"):
        TabularGAN(steps=2, **DP, dp_epsilon=1.0).fit(mixed(100))
    mixed(100).to_csv(tmp_path / "real.csv", index=False)
    args = ["--steps", "2", "--batch-size", "40", "--pac", "4", "--quiet", "--dp-epsilon", "1"]
    assert main(["tabular", "fit", str(tmp_path / "real.csv"), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ganforge: error: differential privacy needs Opacus")
    assert not (tmp_path / "run").exists()


def test_cli_private_fit_and_report(tmp_path, capsys):
    df = mixed(200)
    df.iloc[:150].to_csv(tmp_path / "real.csv", index=False)
    df.iloc[150:].to_csv(tmp_path / "hold.csv", index=False)
    run, synth = tmp_path / "run", tmp_path / "synth.csv"
    args = ["--steps", "3", "--batch-size", "40", "--pac", "4", "--quiet", "--dp-epsilon", "3"]
    assert main(["tabular", "fit", str(tmp_path / "real.csv"), "--out", str(run), *args]) == 0
    assert "spent (target 3) at delta" in capsys.readouterr().err
    assert main(["tabular", "sample", str(run), "--n", "60", "--out", str(synth)]) == 0
    rep, rep_json = tmp_path / "rep.html", tmp_path / "rep.json"
    cmd = ["tabular", "report", str(tmp_path / "real.csv"), str(synth), "--out", str(rep)]
    assert (
        main([*cmd, "--holdout", str(tmp_path / "hold.csv"), "--model", str(run), "--json", str(rep_json)])
        == 0
    )
    assert "DP epsilon" in capsys.readouterr().err
    page = rep.read_text(encoding="utf-8")
    assert "Differential privacy" in page and "Not covered" in page and "pack of 4 rows" in page
    report = json.loads(rep_json.read_text(encoding="utf-8"))
    dp = report["training"]["differential_privacy"]
    assert report["summary"]["dp_epsilon"] == dp["epsilon"] <= 3.0 and "transformer" in dp["not_covered"]


def test_report_says_when_a_model_is_not_private(tmp_path):
    df = mixed(120)
    rep = evaluate(df, df, training={"differential_privacy": None})
    assert rep["summary"]["dp_epsilon"] is None and "without differential privacy" in " ".join(rep["notes"])
    page = write_report(rep, tmp_path / "r.html", df, df).read_text(encoding="utf-8")
    assert "<b>without</b> differential privacy" in page
