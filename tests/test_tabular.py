"""ganforge.tabular: schema inference, the transformer's round trip, edge cases, the model's
determinism and save/load, the reports and the `ganforge tabular` commands, all on tiny tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from ganforge.cli import main
from ganforge.data import Dataset
from ganforge.errors import ConfigError, DataError
from ganforge.families.tabular import Layout
from ganforge.tabular import (
    TableTransformer,
    TabularGAN,
    TabularWarning,
    infer_schema,
    read_table,
    write_table,
)
from ganforge.tabular.mixture import fit_dp_mixture
from ganforge.tabular.report import evaluate, write_report
from ganforge.tabular.sampling import TableSampler

TINY = {"z_dim": 8, "g_dims": (16,), "d_dims": (16,), "pac": 2, "batch_size": 20}


def tiny(**kw) -> TabularGAN:
    return TabularGAN(**{"steps": 3, **TINY, **kw})


def mixed(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Every column kind, with missing values in some."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "price": np.round(np.exp(rng.normal(5, 1, n)), 2),  # continuous, 2 decimals
            "age": rng.integers(18, 90, n),  # integer
            "city": rng.choice(["paris", "lyon", "nice"], n, p=[0.6, 0.3, 0.1]),  # categorical text
            "stars": rng.choice([1, 2, 3], n),  # categorical numbers
            "member": rng.random(n) < 0.3,  # boolean
            "joined": pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 400, n), unit="D"),
            "seen": (pd.Timestamp("2022-03-01") + pd.to_timedelta(rng.integers(0, 90, n), unit="D")).strftime(
                "%d/%m/%Y"
            ),  # dates as text
            "score": np.where(rng.random(n) < 0.2, np.nan, rng.normal(0, 1, n)),  # continuous with NaN
            "tier": np.where(rng.random(n) < 0.2, None, rng.choice(["a", "b"], n)),  # categorical with NaN
            "const": 7,
            "user_id": np.arange(1000, 1000 + n),  # id
            "code": [f"K{i:05d}" for i in range(n)],  # text id
        }
    )


# --- schema and transformer ------------------------------------------------------------------------


def test_schema_inference():
    kinds = {c.name: c.kind for c in infer_schema(mixed()).columns}
    assert kinds == {
        "price": "continuous",
        "age": "integer",
        "city": "categorical",
        "stars": "categorical",
        "member": "boolean",
        "joined": "datetime",
        "seen": "datetime",
        "score": "continuous",
        "tier": "categorical",
        "const": "categorical",
        "user_id": "id",
        "code": "id",
    }
    s = infer_schema(mixed())
    assert s["price"].decimals == 2 and s["score"].nullable and s["seen"].format == "%d/%m/%Y"


def test_schema_overrides_and_their_errors(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text("columns:\n  age: continuous\n  price: {min: 0, clip: false}\n", encoding="utf-8")
    s = infer_schema(mixed(), path)
    assert s["age"].kind == "continuous" and s["price"].min == 0 and not s["price"].clip
    with pytest.raises(DataError, match="unknown column 'prise'.*did you mean 'price'"):
        infer_schema(mixed(), {"prise": "integer"})
    with pytest.raises(DataError, match="unknown kind 'integr'"):
        infer_schema(mixed(), {"age": "integr"})
    with pytest.raises(DataError, match="unknown field 'maxx'"):
        infer_schema(mixed(), {"age": {"maxx": 3}})


def test_every_column_kind_round_trips():
    df = mixed()
    tr = TableTransformer(infer_schema(df)).fit(df)
    x = tr.transform(df)
    assert x.dtype == np.float32 and x.shape == (len(df), tr.width) and np.isfinite(x).all()
    back = tr.inverse(x)
    assert list(back.columns) == list(df.columns)
    assert (back.dtypes == df.dtypes).all()
    for name in ("city", "stars", "member", "joined", "seen", "tier", "const", "age"):
        pd.testing.assert_series_equal(back[name], df[name], check_names=False)
    np.testing.assert_allclose(back["price"], df["price"], rtol=1e-5)
    np.testing.assert_allclose(back["score"], df["score"], rtol=1e-4, atol=1e-5)  # NaN where NaN
    assert back["user_id"].is_unique and back["code"].is_unique  # IDs: fresh unique keys
    assert back["code"].str.fullmatch(r"K\d{5}").all()


def test_point_masses_of_a_numeric_column_are_exact_modes():
    """A zero-inflated, capped amount: the zeros (60 % of rows) and the cap (15 %) get modes of
    their own and decode exactly; the spread values still round-trip through the mixture. A heavy
    value inside the range, an end short of ATOM_SHARE, or a column with too few other values gets
    no atom."""
    from ganforge.tabular.transformer import ATOM_SHARE, find_atoms

    rng = np.random.default_rng(0)
    n = 1000
    amount = np.where(rng.random(n) < 0.6, 0.0, np.round(np.minimum(rng.lognormal(3, 1, n), 998.0), 2))
    amount[:150] = 999.0  # a cap: a second point mass (15 %), at the maximum
    amount[150:160] = np.nan
    df = pd.DataFrame({"amount": amount, "other": rng.normal(size=n)})
    tr = TableTransformer(infer_schema(df)).fit(df)
    codec = tr.codecs[0]
    assert codec.encoding == "modes" and codec.atoms == [0.0, 999.0]
    assert codec.spans == ["tanh:1", f"softmax:{len(codec.means) + 2 + 1}"]  # modes, atoms, null
    back = tr.inverse(tr.transform(df))["amount"].to_numpy()
    np.testing.assert_array_equal(np.isnan(back), np.isnan(amount))
    np.testing.assert_allclose(back[~np.isnan(back)], amount[~np.isnan(amount)], rtol=1e-5, atol=1e-9)
    assert (back == 0.0).sum() == (amount == 0.0).sum()  # exactly, not 1e-4-ish
    # G's raw choice of an atom slot decodes to the atom whatever its alpha
    x = tr.transform(df)
    k = len(codec.means)
    x[:, 0], x[:, 1:] = 0.7, 0.0
    x[:, 1 + k] = 1.0
    assert (tr.inverse(x)["amount"] == 0.0).all()
    # thresholds and edge cases
    light = np.r_[np.zeros(int(ATOM_SHARE * 1000) - 1), rng.normal(size=1000 - int(ATOM_SHARE * 1000) + 1)]
    assert find_atoms(light) == []
    assert find_atoms(np.r_[np.zeros(50), np.full(50, 2.0), np.ones(5)]) == []  # one other value left
    inside = np.r_[np.full(300, 56.0), rng.uniform(50, 70, 700)]  # 30 % at 56, inside the range
    assert find_atoms(inside) == []
    # a saved transformer (JSON) keeps its atoms; one saved before atoms existed loads without
    again = TableTransformer.from_dict(json.loads(json.dumps(tr.to_dict())))
    np.testing.assert_array_equal(again.transform(df), tr.transform(df))
    old = tr.to_dict()
    old["codecs"][0].pop("atoms")
    assert TableTransformer.from_dict(old).codecs[0].atoms is None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_mixture_matches_scikit_learns_variational_mixture():
    from scipy.stats import norm
    from sklearn.mixture import BayesianGaussianMixture

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, 900), rng.normal(10, 0.5, 300)]
    mix = fit_dp_mixture(x, n_components=10, concentration=1e-3)
    near_ten = np.abs(mix.means - 10) < 2
    assert mix.weights[near_ten].sum() == pytest.approx(0.25, abs=0.01)
    ref = BayesianGaussianMixture(
        n_components=10, weight_concentration_prior_type="dirichlet_process", weight_concentration_prior=1e-3
    ).fit(x[:, None])

    def loglik(w, m, v):
        return np.log((w * norm.pdf(x[:, None], m, np.sqrt(v))).sum(1)).mean()

    ours = loglik(mix.weights, mix.means, mix.variances)
    theirs = loglik(ref.weights_, ref.means_[:, 0], ref.covariances_[:, 0, 0])
    assert ours == pytest.approx(theirs, abs=0.02)


# --- the family's training-by-sampling ---------------------------------------------------------------


def test_training_by_sampling_pairs_rows_with_their_condition():
    df = mixed(400)
    tr = TableTransformer(infer_schema(df)).fit(df)
    x = torch.from_numpy(tr.transform(df))
    layout = Layout(tr.spans, tr.cond_spans, tr.width)
    sampler = TableSampler(x, layout, batch_size=4000, seed=0, log_frequency=True)
    batch = sampler.next_batch(Dataset(x=x, kind="table"))
    c_real, rows = batch["c_real"], batch["x"]
    for start, off, w in zip(layout.cond_starts, layout.cond_offsets, layout.cond_widths):
        chosen = c_real[:, off : off + w].sum(1) == 1
        assert (rows[chosen, start : start + w].argmax(1) == c_real[chosen, off : off + w].argmax(1)).all()
    # log-frequency: the rare city (10 %) is drawn far more often than its share.
    city = tr.cond_spans.index(next(i for i, s in enumerate(tr.spans) if s == "softmax:3"))
    off = layout.cond_offsets[city]
    picked = batch["c"][:, off : off + 3]
    share = picked[:, 0].sum() / picked.sum()  # categories sorted: lyon, nice, paris -> nice at 1
    assert picked.sum() > 0 and 0.15 < (picked[:, 1].sum() / picked.sum()) < 0.45 and share > 0.1


def test_fast_paths_compute_the_same_functions():
    """G without re-concatenating z (+) c, the critic's own pass and the one-pass softmax over
    all spans give what the plain definitions give."""
    from ganforge.families.tabular import ResidualGenerator, critic_features, critic_forward
    from ganforge.nn import Discriminator

    torch.manual_seed(0)
    G = ResidualGenerator(12, [16, 8], 7).eval()
    zc = torch.randn(30, 12)
    torch.testing.assert_close(G(zc), G.seq(zc), rtol=1e-5, atol=1e-6)
    G.train()  # batch statistics, as in training; gradients of every weight and of zc agree
    grads = []
    for net in (G, G.seq):
        zc_leaf = zc.clone().requires_grad_(True)
        G.zero_grad()
        (net(zc_leaf) * torch.linspace(-1, 1, 7)).sum().backward()
        grads.append([zc_leaf.grad, *(p.grad for p in G.parameters())])
    for fast, plain in zip(*grads):
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)  # BN zeroes the biases' (~1e-6)
    D = Discriminator(critic_features(4 * 5, [16, 8], 0.5), 8, pac=4).eval()
    packs = D.pack(torch.randn(80, 5))
    torch.testing.assert_close(critic_forward(D, packs), D.head(D.features(packs)).squeeze(1))
    # Gumbel-softmax: one-hots sum to 1, alphas are tanh, argmax frequencies follow softmax(logits).
    layout = Layout(["tanh:1", "softmax:3", "softmax:2"], [1], 6)
    raw = torch.tensor([[0.3, 1.0, 0.0, -1.0, 2.0, 2.0]]).expand(20_000, -1)
    out = layout.activate(raw, 0.2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 0], torch.tanh(raw[:, 0]))
    torch.testing.assert_close(out[:, 1:4].sum(1), torch.ones(20_000))
    freq = torch.bincount(out[:, 1:4].argmax(1), minlength=3) / 20_000.0
    torch.testing.assert_close(freq, torch.softmax(raw[0, 1:4], 0), atol=0.015, rtol=0)
    assert abs(out[:, 4:6].argmax(1).float().mean().item() - 0.5) < 0.015


@pytest.mark.parametrize("momentum", [0.1, None])
def test_generator_training_pass_is_the_sequential_networks_step(momentum):
    """GeneratorPass (G's training forward and hand-written backward over one buffer) gives seq's
    output, every parameter's gradient and the same BatchNorm running statistics and counters,
    with zc outside the graph (training) as with zc needing a gradient; a fixed momentum and
    nn.BatchNorm's cumulative average (momentum None) alike."""
    import copy

    from ganforge.families.tabular import ResidualGenerator

    torch.manual_seed(0)
    G = ResidualGenerator(12, [16, 8, 4], 7).train()
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.momentum = momentum
    ref = copy.deepcopy(G)
    weights = torch.linspace(-1, 1, 7)
    for _ in range(3):  # running statistics move over several steps
        zc = torch.randn(30, 12)
        for net in (G, ref):
            net.zero_grad()
            out = net(zc) if net is G else net.seq(zc)
            assert (out.grad_fn is not None) and (
                type(out.grad_fn).__name__.startswith("GeneratorPass") == (net is G)
            )
            (out * weights).sum().backward()
        for (name, a), b in zip(G.named_parameters(), ref.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
        for (name, a), b in zip(G.named_buffers(), ref.buffers()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert int(G.seq[0].bn.num_batches_tracked) == 3
    torch.testing.assert_close(G(zc), ref.seq(zc), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # outside the graph the split path runs, with the same function
        torch.testing.assert_close(G(zc), ref.seq(zc), rtol=1e-5, atol=1e-5)


def test_pack_rows_writes_the_packs_of_the_concatenated_rows():
    """pack_rows gives D.pack(cat([x (+) c, ...])) with room after it, and the critic's result
    on such a buffer is the result on the packs alone."""
    from ganforge.families.tabular import critic_features, critic_with_penalty, pack_rows
    from ganforge.nn import Discriminator

    torch.manual_seed(0)
    real, fake, c_real, c = torch.randn(40, 3), torch.randn(40, 3), torch.randn(40, 2), torch.randn(40, 2)
    D = Discriminator(critic_features(4 * 5, [16, 8], 0.5), 8, pac=4).eval()
    packs = D.pack(torch.cat([torch.cat([real, c_real], 1), torch.cat([fake, c], 1)]))
    buffer = pack_rows([(real, c_real), (fake, c)], 4, room=10)
    assert buffer.shape == (30, 20) and torch.equal(buffer[:20], packs)
    assert torch.equal(pack_rows([(real, None)], 4), D.pack(real))
    assert pack_rows([(real.bfloat16(), c_real)], 4).dtype == torch.float32
    out, gp = critic_with_penalty(D, packs, torch.Generator().manual_seed(1))
    out_room, gp_room = critic_with_penalty(D, buffer, torch.Generator().manual_seed(1), room=True)
    torch.testing.assert_close(out_room, out)
    torch.testing.assert_close(gp_room, gp)


@pytest.mark.parametrize("dims", [[12], [16, 8], [16, 8, 6]])
def test_critic_with_penalty_matches_autograds_double_backward(dims):
    """CriticWithPenalty (the D phase's logits and closed-form gradient penalty in one Function)
    gives the values and every parameter's gradient that autograd gives for the same critic with
    the same dropout masks: logits by a plain forward, the penalty by a double backward through
    D at x_hat = eps real + (1 - eps) fake, one eps and one norm per pack (CTGAN's)."""
    from ganforge.families.tabular import critic_features, critic_with_penalty, keep_masks
    from ganforge.nn import Discriminator

    torch.manual_seed(0)
    D = Discriminator(critic_features(4 * 5, dims, 0.5), dims[-1], pac=4).train()
    packs = D.pack(torch.randn(80, 5))  # 20 packs: 10 real, then 10 fake
    masks = keep_masks([(20, w) for w in dims] + [(10, w) for w in dims], 0.5, packs)
    linears = [m for m in D.features if isinstance(m, torch.nn.Linear)]

    def critic(x, layer_masks):
        for lin, m in zip(linears, layer_masks):
            x = torch.nn.functional.leaky_relu(lin(x), 0.2) * m
        return D.head(x).squeeze(1)

    weights = torch.linspace(-1.0, 2.0, 20)  # an arbitrary loss on the logits
    results = []
    for fused in (True, False):
        D.zero_grad()
        gen = torch.Generator().manual_seed(3)
        if fused:
            out, gp = critic_with_penalty(D, packs, gen, masks)
        else:
            out = critic(packs, masks[: len(dims)])
            eps = torch.rand((10, 1), generator=gen)
            x_hat = torch.lerp(packs[10:], packs[:10], eps).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(x_hat, masks[len(dims) :]).sum(), x_hat, create_graph=True)
            gp = (grad.norm(dim=1) - 1.0).pow(2).mean()
        ((out * weights).sum() + 10.0 * gp).backward()
        results.append((out.detach(), gp.detach(), [p.grad.clone() for p in D.parameters()]))
    (out, gp, grads), (ref_out, ref_gp, ref_grads) = results
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(gp, ref_gp)
    assert gp > 0.1 and all(g.abs().sum() > 0 for g in grads)
    for ours, ref in zip(grads, ref_grads):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    # eval mode: no dropout, the masks are ones
    D.eval()
    out, _ = critic_with_penalty(D, packs, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, D(packs.reshape(80, 5)))


def test_dropout_masks_keep_each_unit_with_probability_one_minus_p():
    """The critic's dropout masks (16 coin flips per random integer for p = 1/2, a uniform draw
    otherwise) take the values 0 and 1 / (1 - p), keep 1 - p of the units and are independent."""
    from ganforge.families.tabular import keep_mask

    torch.manual_seed(0)
    like = torch.empty(0)
    for p in (0.5, 0.3):
        mask = keep_mask(400, 250, p, like)
        assert mask.shape == (400, 250) and mask.dtype == torch.float32
        assert mask.unique().tolist() == [0.0, pytest.approx(1.0 / (1.0 - p))]
        kept = (mask > 0).float()
        assert abs(kept.mean().item() - (1.0 - p)) < 0.005
        # neighbouring units (within and across the random integers) are uncorrelated
        cov = ((kept[:, 1:] - (1 - p)) * (kept[:, :-1] - (1 - p))).mean().item()
        assert abs(cov) < 0.005
    assert keep_mask(3, 7, 0.5, torch.empty(0, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_critic_with_penalty_is_float32_under_bf16_autocast():
    """With train.amp=bf16 the D phase's packs arrive in bfloat16 (G's rows); the critic and its
    penalty still run in float32: values and gradients as without autocast."""
    from ganforge.families.tabular import critic_features, critic_with_penalty
    from ganforge.nn import Discriminator

    torch.manual_seed(0)
    D = Discriminator(critic_features(2 * 5, [16, 8], 0.5), 8, pac=2).eval()
    packs = torch.randn(40, 10).bfloat16()  # 20 real packs, then 20 fake
    results = []
    for autocast in (False, True):
        D.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, gp = critic_with_penalty(
                D, packs if autocast else packs.float(), torch.Generator().manual_seed(1)
            )
        (out.sum() + gp).backward()
        results.append((out.detach(), gp.detach(), [p.grad.clone() for p in D.parameters()]))
    assert results[1][0].dtype == results[1][1].dtype == torch.float32
    torch.testing.assert_close(results[1][0], results[0][0])
    torch.testing.assert_close(results[1][1], results[0][1])
    for ours, ref in zip(results[1][2], results[0][2]):
        torch.testing.assert_close(ours, ref)


def spy_on_steps(model: TabularGAN, steps: int) -> dict[str, list]:
    """Train `steps` more steps, recording G's forward batch sizes, the rows each G pass made, what
    each D phase judged and the conditional vectors cached after each step."""
    tr = model.trainer
    fam = tr.family
    seen: dict[str, list] = {"g_calls": [], "g_rows": [], "d_inputs": [], "cached_c": []}
    hook = tr.G.register_forward_hook(lambda m, i, o: seen["g_calls"].append(i[0].shape[0]))
    activate, d_rows = fam.layout.activate, fam.d_rows

    def spy_activate(raw, tau, gen):
        out = activate(raw, tau, gen)
        seen["g_rows"].append(out.detach())
        return out

    def spy_d_rows(G, batch, gen):  # what D judges: (real rows (+) their c, generated rows (+) theirs)
        real, c_real, fake, c = rows = d_rows(G, batch, gen)
        seen["d_inputs"].append((fam.with_cond(real, c_real), fam.with_cond(fake, c)))
        return rows

    fam.layout.activate, fam.d_rows = spy_activate, spy_d_rows
    for _ in range(steps):
        tr.train_step()
        seen["cached_c"].append(fam.cached_fakes.get("c"))
    hook.remove()
    return seen


def test_reuse_fakes_trains_the_critic_on_the_last_g_phase_rows_with_their_condition():
    """reuse_fakes=True: G runs once per step after the first, and each D phase judges exactly the
    rows (and conditional vectors) the previous G phase made; with neither reuse nor sharing
    (CTGAN's step), G runs twice."""
    df = mixed()
    plain = spy_on_steps(tiny(steps=1, share_fakes=False).fit(df), 3)
    model = tiny(reuse_fakes=True, steps=1).fit(df)
    reuse = spy_on_steps(model, 3)
    assert len(plain["g_calls"]) == 6 and len(reuse["g_calls"]) == 3
    width, cond_dim = reuse["g_rows"][0].shape[1], model.trainer.family.layout.cond_dim
    assert cond_dim > 0
    for step in (1, 2):  # steps 2 and 3 judge the rows of steps 1 and 2, their c included
        fake_in = reuse["d_inputs"][step][1]
        torch.testing.assert_close(fake_in[:, :width], reuse["g_rows"][step - 1])
        torch.testing.assert_close(fake_in[:, width:], reuse["cached_c"][step - 1])


def test_share_fakes_backpropagates_the_g_phase_through_the_d_phase_rows():
    """share_fakes=True: G runs once per step; the D phase judges those rows (detached) and the G
    phase's loss back-propagates through the same rows into G. Training stays seeded."""
    df = mixed()
    model = tiny(share_fakes=True, steps=1).fit(df)
    fam = model.trainer.family
    g_phase_rows = []
    g_loss = fam.g_loss

    def spy_g_loss(G, D, batch, gen):
        g_phase_rows.append(fam.shared.get("fake"))
        return g_loss(G, D, batch, gen)

    fam.g_loss = spy_g_loss
    before = [p.detach().clone() for p in model.trainer.G.parameters()]
    seen = spy_on_steps(model, 3)
    assert len(seen["g_calls"]) == 3 and len(seen["g_rows"]) == 3
    width = seen["g_rows"][0].shape[1]
    for step in range(3):
        rows = g_phase_rows[step]
        assert rows is not None and rows.grad_fn is not None  # G's graph, kept for the G phase
        torch.testing.assert_close(seen["d_inputs"][step][1][:, :width], rows.detach())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.trainer.G.parameters()))
    assert fam.shared == {}  # used once
    again = tiny(share_fakes=True, steps=4).fit(df)
    other = tiny(share_fakes=True, steps=4).fit(df)
    for a, b in zip(again.trainer.G.parameters(), other.trainer.G.parameters()):
        assert torch.equal(a, b)


def test_bf16_fit_samples_and_fp16_is_refused_on_cpu():
    df = mixed()
    synth = tiny(amp="bf16").fit(df).sample(50, seed=0)
    assert list(synth.columns) == list(df.columns) and len(synth) == 50
    with pytest.raises(ConfigError, match="fp16"):
        tiny(amp="fp16").fit(df)


# --- model: fit, sample, determinism, conditions, save/load --------------------------------------------


def test_fit_sample_keeps_columns_dtypes_and_domains():
    df = mixed()
    synth = tiny().fit(df).sample(300)
    assert list(synth.columns) == list(df.columns) and (synth.dtypes == df.dtypes).all()
    assert set(synth["city"]) <= set(df["city"]) and set(synth["stars"]) <= {1, 2, 3}
    assert (
        synth["age"].between(18, 89).all()
        and synth["price"].between(df["price"].min(), df["price"].max()).all()
    )
    assert (synth["const"] == 7).all() and synth["user_id"].is_unique
    assert synth["price"].round(2).equals(synth["price"])


def test_same_seed_same_samples_and_save_load(tmp_path):
    df = mixed()
    a, b = tiny(seed=3).fit(df), tiny(seed=3).fit(df)
    pd.testing.assert_frame_equal(a.sample(50), b.sample(50))
    assert not a.sample(50, seed=1).equals(a.sample(50, seed=2))
    a.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.safetensors",
        "stats.jsonl",
        "tabular.json",
    ]
    pd.testing.assert_frame_equal(TabularGAN.load(tmp_path / "m").sample(50), a.sample(50))


def test_samples_come_from_the_weight_average_unless_it_is_off():
    df = mixed()
    averaged, last = tiny(steps=6).fit(df), tiny(steps=6, ema_decay=0.0).fit(df)
    tr = averaged.trainer
    assert tr.G_sample is tr.G_ema and last.trainer.G_sample is last.trainer.G
    # One training run (the average does not feed back), so G's last weights match; G_ema's do not.
    for p, q in zip(tr.G.parameters(), last.trainer.G.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, e) for p, e in zip(tr.G.parameters(), tr.G_ema.parameters()))
    assert not averaged.sample(40).equals(last.sample(40))
    decayed = tiny(steps=4, lr_decay="linear").fit(df)  # the step falls to 0 at the last step
    assert decayed.trainer.opt_G.param_groups[0]["lr"] == pytest.approx(5e-4 * (1 - 3 / 4))
    with pytest.raises(ConfigError, match="ema_decay must lie in \\[0, 1\\), got 1.0"):
        TabularGAN(ema_decay=1.0)


def test_folders_saved_before_the_weight_average_still_load(tmp_path):
    model = tiny(ema_decay=0.0).fit(mixed())
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "tabular.json").read_text())
    del doc["params"]["ema_decay"]  # as written by ganforge before the option existed
    (tmp_path / "m" / "tabular.json").write_text(json.dumps(doc))
    pd.testing.assert_frame_equal(TabularGAN.load(tmp_path / "m").sample(50), model.sample(50))


def test_conditional_sampling_and_its_errors():
    model = tiny().fit(mixed())
    out = model.sample(30, conditions={"city": "nice", "member": True})
    assert (out["city"] == "nice").all() and out["member"].all()
    assert (model.sample(10, conditions={"stars": "2"})["stars"] == 2).all()  # text from a command line
    with pytest.raises(DataError, match="unknown column 'citi'.*did you mean 'city'"):
        model.sample(5, conditions={"citi": "nice"})
    with pytest.raises(DataError, match="no value 'rome'"):
        model.sample(5, conditions={"city": "rome"})
    with pytest.raises(DataError, match="only condition on categorical"):
        model.sample(5, conditions={"age": 30})


def test_cond_sampling_draws_categories_by_frequency_log_frequency_or_uniformly():
    df = mixed()
    model = tiny().fit(df)
    onehot = [c for c in model.transformer.codecs if c.encoding == "onehot"]
    city = next(c for c in onehot if c.name == "city")
    start = sum(c.width for c in onehot[: onehot.index(city)])
    counts = np.array([(df["city"] == v).sum() for v in city.categories], dtype=float)
    for mode, weight in (("data", counts), ("log", np.log1p(counts)), ("uniform", np.ones(3))):
        probs = model._cond_frequencies(mode).numpy()
        assert probs.sum() == pytest.approx(1.0, abs=1e-6)
        expected = weight / weight.sum() / len(onehot)  # a column uniformly, then a category
        np.testing.assert_allclose(probs[start : start + 3], expected, rtol=1e-6)
    assert not model.sample(20, cond_sampling="uniform").equals(model.sample(20))
    with pytest.raises(ConfigError, match="cond_sampling must be one of data, log, uniform"):
        model.sample(5, cond_sampling="balanced")


def test_family_refuses_stabilisers_that_ignore_the_conditional_vector():
    from ganforge.api import build_config
    from ganforge.families import FAMILIES, DataSpec

    spec = DataSpec("table", (3,))
    cfg = build_config({"model": "tabular", "stab": {"r1_gamma": 1.0}}, spec)
    with pytest.raises(ConfigError, match="does not support stab.r1_gamma"):
        FAMILIES.get("tabular")(cfg, spec)


def test_unfitted_and_bad_arguments():
    with pytest.raises(ConfigError, match="not fitted"):
        TabularGAN().sample(3)
    with pytest.raises(ConfigError, match="multiple of stab.pac"):
        TabularGAN(steps=1, batch_size=25, pac=10).fit(mixed())


# --- edge cases --------------------------------------------------------------------------------------------


def test_one_row_is_repeated_with_a_warning():
    df = mixed().iloc[:1]
    with pytest.warns(TabularWarning) as record:
        model = tiny().fit(df)
    messages = " | ".join(str(w.message) for w in record)
    assert "only 1 rows" in messages and "every column is constant" in messages
    out = model.sample(3)
    assert (
        len(out) == 3
        and (out["city"] == df["city"].iloc[0]).all()
        and (out["price"] == df["price"].iloc[0]).all()
    )


def test_one_column_numeric_only_and_few_rows():
    one = tiny().fit(pd.DataFrame({"x": ["a", "b", "b", "c"] * 5})).sample(20)
    assert set(one["x"]) <= {"a", "b", "c"}
    few = pd.DataFrame({"x": [1.5, 2.25, 3.0, 8.5], "y": [0.1, 0.2, 0.3, 0.4]})  # 4 rows < 10 modes
    model = tiny(batch_size=4).fit(few)
    assert len(model.transformer.codecs[0].means) <= 4
    out = model.sample(10)
    assert out["x"].between(1.5, 8.5).all() and model.trainer.family.layout.cond_dim == 0


def test_all_constant_or_id_table_needs_no_network():
    df = pd.DataFrame({"k": range(30), "c": ["same"] * 30})  # an ID and a constant
    with pytest.warns(TabularWarning, match="nothing to learn"):
        model = tiny().fit(df)
    out = model.sample(4)
    assert model.trainer is None and list(out["c"]) == ["same"] * 4 and out["k"].is_unique


def test_high_cardinality_warns():
    df = pd.DataFrame({"name": [f"n{i % 250}" for i in range(500)], "v": np.arange(500) % 7 * 1.5})
    with pytest.warns(TabularWarning, match="250 categories"):
        TableTransformer(infer_schema(df)).fit(df)


def test_reading_bad_files(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "header.csv").write_text("a,b\n", encoding="utf-8")
    (tmp_path / "semi.csv").write_text("a;b\n1;x\n2;y\n", encoding="utf-8")
    (tmp_path / "latin.csv").write_bytes("name,v\ncaf\xe9,1\nthe,2\n".encode("latin-1"))
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataError, match="is empty"):
        read_table(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="no rows"):
        read_table(tmp_path / "header.csv")
    with pytest.raises(DataError, match="wrong delimiter"):
        read_table(tmp_path / "semi.csv", delimiter=",")
    assert list(read_table(tmp_path / "semi.csv")[0].columns) == ["a", "b"]  # detected
    with pytest.raises(DataError, match="0xe9 on line 2 is not valid utf-8"):
        read_table(tmp_path / "latin.csv")
    assert read_table(tmp_path / "latin.csv", encoding="latin-1")[0]["name"][0] == "café"
    with pytest.raises(DataError, match="unsupported table format .xlsx"):
        read_table(tmp_path / "data.xlsx")
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "missing.csv")


def test_parquet_round_trip_keeps_dtypes(tmp_path):
    df = mixed(40)
    write_table(df, tmp_path / "t.parquet")
    back, src = read_table(tmp_path / "t.parquet")
    assert src.format == "parquet" and (back.dtypes == df.dtypes).all()


# --- reports -------------------------------------------------------------------------------------------------


def test_report_on_identical_tables_and_html(tmp_path):
    df = mixed(200)
    train, hold = df.iloc[:150], df.iloc[150:]
    rep = evaluate(train, train, holdout=hold, target="city")
    assert rep["summary"]["fidelity"] == pytest.approx(1.0)
    assert rep["privacy"]["exact_copies"] == 1.0 and rep["privacy"]["dcr_synthetic"]["dcr_median"] == 0.0
    assert rep["utility"]["ratio"] == pytest.approx(1.0) and 0 <= rep["privacy"]["mia_auc"] <= 1
    page = write_report(rep, tmp_path / "r.html", train, train).read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") >= 3 and "Membership" in page
    json.loads(write_report(rep, tmp_path / "r.json").read_text(encoding="utf-8"))
    with pytest.raises(DataError, match="missing \\['price'\\]"):
        evaluate(train, train.drop(columns="price"))


# --- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_fit_sample_report(tmp_path, capsys):
    df = mixed(150)
    df.iloc[:100].to_csv(tmp_path / "real.csv", index=False)
    df.iloc[100:].to_csv(tmp_path / "hold.csv", index=False)
    run, synth, rep = tmp_path / "run", tmp_path / "synth.csv", tmp_path / "rep.html"
    args = ["--steps", "2", "--batch-size", "20", "--pac", "2", "--quiet"]
    assert main(["tabular", "fit", str(tmp_path / "real.csv"), "--out", str(run), *args]) == 0
    assert TabularGAN.load(run).params["share_fakes"] is True
    fresh = tmp_path / "fresh"
    assert (
        main(
            ["tabular", "fit", str(tmp_path / "real.csv"), "--out", str(fresh), *args, "--fresh-fakes"]
            + ["--lr", "2e-4", "--ema-decay", "0"]
        )
        == 0
    )
    params = TabularGAN.load(fresh).params
    assert params["share_fakes"] is False and params["g_lr"] == params["d_lr"] == 2e-4
    assert params["ema_decay"] == 0.0 and TabularGAN.load(run).params["ema_decay"] == 0.999
    assert (
        main(["tabular", "sample", str(run), "--n", "40", "--out", str(synth), "--condition", "city=lyon"])
        == 0
    )
    out = pd.read_csv(synth)
    assert len(out) == 40 and list(out.columns) == list(df.columns) and (out["city"] == "lyon").all()
    assert (
        main(["tabular", "sample", str(run), "--n", "9", "--out", str(synth), "--cond-sampling", "log"]) == 0
    )
    assert len(pd.read_csv(synth)) == 9
    raw = tmp_path / "raw.csv"
    assert main(["tabular", "sample", str(run), "--n", "30", "--out", str(raw), "--no-calibrate"]) == 0
    assert main(["tabular", "sample", str(run), "--n", "30", "--out", str(synth)]) == 0
    pd.testing.assert_frame_equal(  # the default draws from a larger pool
        pd.read_csv(raw), TabularGAN.load(run).sample(30, calibrate=False), check_dtype=False
    )
    assert not pd.read_csv(raw).equals(pd.read_csv(synth))
    cmd = ["tabular", "report", str(tmp_path / "real.csv"), str(synth), "--out", str(rep)]
    assert main([*cmd, "--holdout", str(tmp_path / "hold.csv"), "--target", "member"]) == 0
    assert rep.read_text(encoding="utf-8").startswith("<!doctype html>")
    capsys.readouterr()
    # User errors: one line, exit 2, nothing written.
    assert main(["tabular", "fit", str(tmp_path / "real.csv"), "--out", str(run), *args]) == 2
    assert main(["tabular", "sample", str(run), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert (
        main(["tabular", "sample", str(run), "--out", str(tmp_path / "y.csv"), "--condition", "town=x"]) == 2
    )
    assert main(["tabular", "fit", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r2"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("ganforge: error: ") for line in err)
    assert (
        not (tmp_path / "x.xlsx").exists()
        and not (tmp_path / "y.csv").exists()
        and not (tmp_path / "r2").exists()
    )
