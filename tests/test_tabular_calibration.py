"""Calibrated sampling: raking weights, weighted subsampling, and TabularGAN.sample's use of them."""

from __future__ import annotations

import numpy as np
import pytest

from ganforge.tabular.calibration import inclusion_probabilities, rake_weights, weighted_subsample

from .test_tabular import mixed, tiny


def shares(code: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(code, weights=w, minlength=k) / w.sum()


def test_raking_an_independent_pool_gives_the_product_of_the_margin_ratios():
    # A pool where a and b are independent: every (a, b) cell has p_a * p_b * N rows. Raking to
    # new margins t_a, t_b must give each row the weight t_a t_b / (p_a p_b) / N (closed form).
    p_a, p_b = np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5])
    a, b = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    counts = np.rint(np.outer(p_a, p_b) * 100).astype(int)  # 10, 15, 25 per a
    code_a, code_b = np.repeat(a.ravel(), counts.ravel()), np.repeat(b.ravel(), counts.ravel())
    t_a, t_b = np.array([0.8, 0.2]), np.array([0.6, 0.3, 0.1])
    w = rake_weights([code_a, code_b], [t_a * 50, t_b])  # counts or shares alike
    np.testing.assert_allclose(w, t_a[code_a] * t_b[code_b] / (p_a[code_a] * p_b[code_b]) / 100, rtol=1e-6)
    np.testing.assert_allclose(shares(code_a, w, 2), t_a, atol=1e-6)
    np.testing.assert_allclose(shares(code_b, w, 3), t_b, atol=1e-6)


def test_raking_matches_margins_of_a_dependent_pool_and_skips_absent_categories():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 3, 2000)
    b = np.where(rng.random(2000) < 0.7, a, rng.integers(0, 3, 2000))  # strongly tied to a
    c = np.zeros(2000, dtype=np.int64)  # category 1 of c never generated
    w = rake_weights([a, b, c], [[1, 1, 2], [3, 1, 1], [9, 1]])
    np.testing.assert_allclose(shares(a, w, 3), [0.25, 0.25, 0.5], atol=1e-5)
    np.testing.assert_allclose(shares(b, w, 3), [0.6, 0.2, 0.2], atol=1e-5)
    np.testing.assert_allclose(shares(c, w, 2), [1.0, 0.0])
    assert w.sum() == pytest.approx(1.0) and (w > 0).all()


def test_inclusion_probabilities_cap_at_one_and_sum_to_n():
    w = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(inclusion_probabilities(w, 2), [0, 0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(inclusion_probabilities(w, 3), [0, 1 / 3, 2 / 3, 1, 1])  # 1.2 and 0.9 capped


def test_weighted_subsample_draws_distinct_rows_by_weight():
    w = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    idx = weighted_subsample(w, 4, np.random.default_rng(0))
    assert idx.tolist() == [1, 2, 3, 4]  # the weight-0 row only when nothing else is left
    assert weighted_subsample(w, 5, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]
    rng = np.random.default_rng(1)
    first = np.array([weighted_subsample(w, 1, rng)[0] for _ in range(4000)])
    np.testing.assert_allclose(np.bincount(first, minlength=5) / 4000, w, atol=0.03)  # n = 1: exactly ~ w
    rng = np.random.default_rng(2)  # n = 2: each row in with probability 2 w_i (none above 1 here)
    hits = sum(np.bincount(weighted_subsample(w, 2, rng), minlength=5) for _ in range(4000))
    np.testing.assert_allclose(hits / 4000, 2 * w, atol=0.03)
    a, b = (weighted_subsample(np.full(50, 0.02), 10, np.random.default_rng(7)) for _ in range(2))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 10
    with pytest.raises(ValueError, match="cannot draw 6 distinct rows from 5"):
        weighted_subsample(w, 6, np.random.default_rng(0))


def test_calibrated_samples_have_the_training_category_frequencies():
    df = mixed(300)
    model = tiny().fit(df)  # 3 steps: G's own category frequencies are far from the data's
    real = df["city"].value_counts(normalize=True)

    def tv(synth) -> float:
        return 0.5 * float(
            (synth["city"].value_counts(normalize=True).reindex(real.index).fillna(0) - real).abs().sum()
        )

    calibrated, raw = model.sample(600), model.sample(600, calibrate=False)
    assert tv(calibrated) < 0.06 and tv(calibrated) < tv(raw)
    assert calibrated.equals(model.sample(600)) and not calibrated.equals(raw)
    assert list(calibrated.columns) == list(df.columns) and (calibrated.dtypes == df.dtypes).all()
    # Other frequencies asked for, or conditions: G's rows as they come.
    assert model.sample(50, cond_sampling="log").equals(
        model.sample(50, cond_sampling="log", calibrate=False)
    )


def test_large_samples_are_calibrated_pool_by_pool(monkeypatch):
    import ganforge.tabular.model as model_module

    df = mixed(300)
    model = tiny().fit(df)
    monkeypatch.setattr(model_module, "CALIBRATE_CHUNK", 100)  # 600 rows: six pools of 300
    out = model.sample(600)
    real = df["city"].value_counts(normalize=True)
    got = out["city"].value_counts(normalize=True).reindex(real.index).fillna(0)
    assert len(out) == 600 and out.equals(model.sample(600))
    assert 0.5 * float((got - real).abs().sum()) < 0.06
