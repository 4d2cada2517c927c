"""Known-answer tests for ganforge.metrics: closed forms, references and limiting cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg

from ganforge.metrics import (
    StreamingStats,
    class_histogram_metrics,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    gaussian_mixture_modes,
    inception_score,
    kernel_inception_distance,
    mmd2_unbiased,
    prdc,
    trace_sqrt_product,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ring(k: int = 8, radius: float = 2.0) -> torch.Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)  # (K, 2)


def pytorch_fid_reference(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """The formula of pytorch-fid's calculate_frechet_distance (scipy sqrtm, offset, complex check)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


# --- FID ------------------------------------------------------------------------------------


def test_fid_identical_sets_is_zero():
    x = torch.randn(500, 16, generator=_gen())
    assert abs(fid_from_features(x, x)) < 1e-6


def test_fid_diagonal_closed_form_including_zero_variances():
    # Diagonal covariances: tr sqrt(S1 S2) = sum s1 s2, so FID = |mu1 - mu2|² + sum (s1 - s2)² for stds s.
    # The zero stds make S1 singular, which exercises the eigh route instead of Cholesky.
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 3.0]), torch.tensor([1.0, 1.0, 0.5, -1.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.tensor([2.0, 0.5, 0.0, 1.0])
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    got = frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2))
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("singular", [False, True])
def test_fid_commuting_full_covariances(singular):
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: tr sqrt(S1 S2) = sum sqrt(a b).
    g = _gen(1)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    a = torch.tensor([4.0, 1.0, 0.25, 9.0, 2.0, 0.0 if singular else 1.5], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0, 4.0, 0.5, 3.0, 2.0], dtype=torch.float64)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)
    expected = float((mu1**2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    got = frechet_distance(mu1, q @ torch.diag(a) @ q.T, mu2, q @ torch.diag(b) @ q.T)
    # A zero eigenvalue rounds to ~1e-16, and its square root to ~1e-8: the singular case is looser.
    assert got == pytest.approx(expected, rel=1e-8 if singular else 1e-10)


def test_fid_matches_pytorch_fid_formula():
    rng = np.random.default_rng(0)
    d = 64
    x = rng.standard_normal((2000, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)
    y = np.maximum(rng.standard_normal((2000, d)) @ rng.standard_normal((d, d)) / np.sqrt(d), 0) + 0.3
    mu1, sigma1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, sigma2 = y.mean(0), np.cov(y, rowvar=False)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert ours == pytest.approx(pytorch_fid_reference(mu1, sigma1, mu2, sigma2), rel=1e-6)


def test_fid_takes_tensors_numpy_cannot_read():
    # CUDA statistics once failed in `.numpy()`; on a CPU, tensors that require grad (float32 and
    # float64) fail there the same way and go through the same conversion to CPU float64.
    rng = np.random.default_rng(1)
    d = 12
    x32 = (rng.standard_normal((400, d)) @ rng.standard_normal((d, d))).astype(np.float32)
    y32 = (rng.standard_normal((400, d)) + 0.5).astype(np.float32)
    x, y = x32.astype(np.float64), y32.astype(np.float64)  # the exact values the tensors hold
    stats = [x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)]
    expected = frechet_distance(*stats)  # NumPy float64 inputs
    as_grad64 = [torch.tensor(v, requires_grad=True) for v in stats]
    assert frechet_distance(*as_grad64) == expected
    assert trace_sqrt_product(as_grad64[1], as_grad64[3]) == trace_sqrt_product(stats[1], stats[3])
    x_grad = torch.tensor(x32, requires_grad=True)  # float32, as Inception features come
    assert fid_from_features(x_grad, torch.from_numpy(y32)) == fid_from_features(x, y)
    mu1, sigma1 = feature_statistics(x_grad)
    assert frechet_distance(mu1, sigma1, *feature_statistics(y32)) == fid_from_features(x, y)
    assert x_grad.grad is None  # nothing was differentiated, and the inputs are untouched
    assert torch.equal(x_grad.detach(), torch.from_numpy(x32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fid_takes_cuda_features():
    x = torch.randn(1000, 32, generator=_gen(0))
    y = torch.randn(1000, 32, generator=_gen(1)) * 1.2 + 0.1
    expected = fid_from_features(x, y)
    assert fid_from_features(x.cuda(), y.cuda()) == pytest.approx(expected, rel=1e-9)
    stats = [t.cuda() for t in (*feature_statistics(x), *feature_statistics(y))]
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-9)


def test_fid_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="means"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(4))


def test_streaming_stats_equal_numpy_over_uneven_batches():
    rng = np.random.default_rng(0)
    # A large common offset would cancel catastrophically in sum-of-outer-products form.
    x32 = (rng.standard_normal((1000, 12)) @ rng.standard_normal((12, 12)) + 1e3).astype(np.float32)
    x = x32.astype(np.float64)  # the reference sees exactly the float32 values the stats see
    stats = StreamingStats()
    for batch in np.split(x32, [1, 7, 300, 301, 650]):
        stats.update(torch.from_numpy(batch))
    assert stats.n == 1000
    np.testing.assert_allclose(stats.mean.numpy(), x.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-10)
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-10)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=0, atol=1e-10)


def test_streaming_stats_needs_two_samples():
    stats = StreamingStats().update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2"):
        _ = stats.cov


# --- KID ------------------------------------------------------------------------------------


def test_kid_hand_computed_unbiased_estimate():
    # d = 1, k(x, y) = (xy + 1)^3. X = {0, 1}, Y = {0, 2}:
    # off-diagonal XX: k(0,1) = 1; YY: k(0,2) = 1; XY: 1 + 1 + 1 + 27 = 30 over 4 pairs.
    # MMD²_u = 1 + 1 - 2 * 30 / 4 = -13 (negative: the estimator is unbiased, not a square).
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    assert mmd2_unbiased(x, y) == pytest.approx(-13.0)
    assert kernel_inception_distance(x, y, n_subsets=3, subset_size=2) == pytest.approx((-13.0, 0.0))


def test_kid_same_distribution_near_zero_shifted_positive():
    g = _gen()
    x, y = torch.randn(500, 16, generator=g), torch.randn(500, 16, generator=g)
    same_mean, same_std = kernel_inception_distance(x, y, n_subsets=20, subset_size=200)
    shifted_mean, _ = kernel_inception_distance(x, y + 0.5, n_subsets=20, subset_size=200)
    assert abs(same_mean) < 0.02 and same_std > 0
    assert shifted_mean > 0.5


def test_kid_is_seeded():
    g = _gen()
    x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    assert kernel_inception_distance(x, y, 5, 100, seed=3) == kernel_inception_distance(x, y, 5, 100, seed=3)


# --- precision / recall / density / coverage ------------------------------------------------


def test_prdc_identical_sets():
    x = torch.randn(300, 8, generator=_gen())
    m = prdc(x, x)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["coverage"] == 1.0
    assert m["density"] == pytest.approx(1.0, abs=0.01)  # ties at the k-th neighbour round either way


def test_prdc_disjoint_supports():
    x = torch.randn(300, 8, generator=_gen())
    assert prdc(x, x + 100.0) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_precision_and_recall_not_swapped():
    g = _gen(2)
    wide, narrow = torch.randn(1000, 4, generator=g), 0.2 * torch.randn(1000, 4, generator=g)
    # Fake inside a small part of real: every fake looks real (precision), most real is missed (recall).
    m = prdc(real=wide, fake=narrow)
    assert m["precision"] > 0.9 and m["recall"] < 0.2
    # The reverse: fake spread far beyond real.
    m = prdc(real=narrow, fake=wide)
    assert m["precision"] < 0.2 and m["recall"] > 0.9


def test_collapsed_generator_low_recall_coverage_and_modes():
    g = _gen(3)
    centres, std = _ring(8), 0.05
    real = centres[torch.randint(0, 8, (800,), generator=g)] + std * torch.randn(800, 2, generator=g)
    fake = centres[0] + std * torch.randn(800, 2, generator=g, dtype=torch.float64)  # one mode only
    healthy = prdc(
        real, centres[torch.randint(0, 8, (800,), generator=g)] + std * torch.randn(800, 2, generator=g)
    )
    collapsed = prdc(real, fake)
    assert healthy["recall"] > 0.9 and healthy["coverage"] > 0.9
    assert collapsed["precision"] > 0.9  # the one mode is realistic...
    assert collapsed["recall"] < 0.25 and collapsed["coverage"] < 0.25  # ...but 7 of 8 are missing
    assert gaussian_mixture_modes(real, centres, std)["modes"] == 8
    assert gaussian_mixture_modes(fake, centres, std)["modes"] == 1


def test_prdc_rejects_k_too_large():
    x = torch.randn(4, 2, generator=_gen())
    with pytest.raises(ValueError, match="k must be"):
        prdc(x, x, k_pr=3, k_dc=5)


# --- Inception Score ------------------------------------------------------------------------


def test_inception_score_confident_balanced_is_k():
    k = 10
    probs = torch.nn.functional.one_hot(torch.arange(1000) % k, k).double()  # each split holds every class
    mean, std = inception_score(probs, n_splits=10)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_identical_predictions_is_one():
    p = torch.softmax(torch.randn(1, 7, generator=_gen()), dim=1).expand(200, 7)
    mean, std = inception_score(p)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        inception_score(torch.randn(100, 10, generator=_gen()))


# --- mode metrics ---------------------------------------------------------------------------


def test_modes_exact_centres():
    centres = _ring(8)
    m = gaussian_mixture_modes(centres.repeat(10, 1), centres, std=0.02)
    assert m == {"modes": 8, "hq_fraction": 1.0, "reverse_kl": pytest.approx(0.0, abs=1e-12)}


def test_modes_two_of_eight():
    centres, std = _ring(8), 0.02
    samples = centres[torch.arange(200) % 2] + 0.5 * std * torch.randn(
        200, 2, generator=_gen(), dtype=torch.float64
    )
    m = gaussian_mixture_modes(samples, centres, std)
    assert m["modes"] == 2 and m["hq_fraction"] == 1.0
    assert m["reverse_kl"] == pytest.approx(math.log(4))  # q = (1/2, 1/2): sum q log(8 q) = log 4


def test_modes_low_quality_samples_do_not_count():
    centres = _ring(8)
    samples = torch.cat([centres[:1], torch.zeros(3, 2, dtype=torch.float64)])  # origin: 2 from every centre
    m = gaussian_mixture_modes(samples, centres, std=0.02)
    assert m["modes"] == 1 and m["hq_fraction"] == 0.25 and m["reverse_kl"] == pytest.approx(math.log(8))
    assert math.isnan(gaussian_mixture_modes(torch.zeros(2, 2), centres, std=0.02)["reverse_kl"])


def test_class_histogram_metrics_stacked_mnist_protocol():
    all_modes = class_histogram_metrics(torch.arange(5000) % 1000, n_classes=1000)
    assert all_modes == {"modes": 1000, "kl": pytest.approx(0.0, abs=1e-12)}
    ten_modes = class_histogram_metrics(torch.arange(5000) % 10, n_classes=1000)
    assert ten_modes == {"modes": 10, "kl": pytest.approx(math.log(100))}
    with pytest.raises(ValueError, match="lie in"):
        class_histogram_metrics(torch.tensor([0, 1000]), n_classes=1000)
