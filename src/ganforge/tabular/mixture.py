"""A one-dimensional variational Gaussian mixture with a Dirichlet-process prior, in numpy.

The model and updates are those of scikit-learn's ``BayesianGaussianMixture`` with
``weight_concentration_prior_type="dirichlet_process"`` (Blei & Jordan 2006, stick-breaking
variational inference; Bishop 2006, Sec. 10.2 for the Gaussian-Wishart factors), specialised to
one feature so every quantity is an (N, K) or (K,) array and an iteration is a dozen vector
operations. CTGAN's mode-specific normalisation fits one per continuous column (Xu et al. 2019,
Sec. 4.2, with concentration 0.001 and at most 10 modes); this version is ~10x faster than the
general one on a busy CPU, mostly by replacing k-means++ and the per-iteration Cholesky
machinery with their 1-D closed forms.

Priors (scikit-learn's defaults): mean prior = data mean, mean precision beta0 = 1, degrees of
freedom nu0 = 1, covariance prior = data variance; reg_covar 1e-6 keeps variances positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import betaln, digamma, gammaln


@dataclass
class Mixture1D:
    weights: np.ndarray  # (K,) expected stick-breaking weights
    means: np.ndarray  # (K,)
    variances: np.ndarray  # (K,) as scikit-learn's covariances_
    n_iter: int
    converged: bool


def fit_dp_mixture(
    x: np.ndarray,
    n_components: int = 10,
    concentration: float = 1e-3,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    seed: int = 0,
) -> Mixture1D:
    """Variational DP-GMM on the 1-D values `x` (N,); stops when the lower bound changes < tol.

    The data are standardised first (so `reg_covar` is relative to the data's variance) and
    the result mapped back; the priors follow the data, so the fit is otherwise scale-free."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = len(x)
    k = max(1, min(n_components, n))
    loc, scale = x.mean(), x.std()
    scale = scale if scale > 0 else 1.0
    x = (x - loc) / scale
    var0 = (x.var(ddof=1) if n > 1 else 0.0) + reg_covar  # prior covariance; the prior mean is 0
    x2 = x * x
    resp = np.zeros((n, k))
    resp[np.arange(n), kmeans_1d(x, k, seed)] = 1.0
    p = _m_step(x, x2, resp, var0, concentration, reg_covar)
    lower = -np.inf
    converged, it = False, 0
    while it < max_iter:  # scikit-learn's order: E step, M step, bound
        it += 1
        resp, entropy = _e_step(x, p)
        p = _m_step(x, x2, resp, var0, concentration, reg_covar)
        log_det = np.log(p["prec_chol"]) - 0.5 * np.log(p["nu"])
        log_wishart = -(p["nu"] * log_det + p["nu"] * 0.5 * np.log(2.0) + gammaln(0.5 * p["nu"]))
        bound = entropy - log_wishart.sum() + betaln(p["a"], p["b"]).sum() - 0.5 * np.log(p["beta"]).sum()
        if abs(bound - lower) < tol:
            converged = True
            break
        lower = bound
    a, b = p["a"], p["b"]
    weights = a / (a + b) * np.concatenate([[1.0], np.cumprod(b / (a + b))[:-1]])
    return Mixture1D(
        weights / weights.sum(), loc + scale * p["means"], scale**2 * p["variances"], it, converged
    )


def _m_step(
    x: np.ndarray, x2: np.ndarray, resp: np.ndarray, var0: float, concentration: float, reg_covar: float
) -> dict[str, np.ndarray]:
    """Posterior of the stick-breaking weights Beta(a, b) and of the Gaussian-Wishart factors."""
    beta0, nu0 = 1.0, 1.0  # mean precision and degrees of freedom priors; the mean prior is 0
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps  # (K,)
    xk = x @ resp / nk
    sk = np.maximum(x2 @ resp / nk - xk**2, 0.0) + reg_covar  # E[x^2] - E[x]^2 (x is standardised)
    beta = beta0 + nk
    nu = nu0 + nk
    variances = (var0 + nk * sk + nk * beta0 / beta * xk**2) / nu
    return {
        "a": 1.0 + nk,
        "b": concentration + np.concatenate([np.cumsum(nk[::-1])[-2::-1], [0.0]]),
        "beta": beta,
        "means": nk * xk / beta,
        "nu": nu,
        "variances": variances,
        "prec_chol": 1.0 / np.sqrt(variances),
    }


def _e_step(x: np.ndarray, p: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    """(responsibilities (N, K), their entropy) from the expected log weights and densities."""
    a, b, nu, prec = p["a"], p["b"], p["nu"], p["prec_chol"]
    dsum = digamma(a + b)
    log_w = digamma(a) - dsum + np.concatenate([[0.0], np.cumsum(digamma(b) - dsum)[:-1]])
    log_lambda = np.log(2.0) + digamma(0.5 * nu)
    # log w_k + E[log N(x; mu_k, Lambda_k)] = const_k - 0.5 ((x - mu_k) prec_k)^2
    const = (
        -0.5 * np.log(2 * np.pi)
        + np.log(prec)
        - 0.5 * np.log(nu)
        + 0.5 * (log_lambda - 1.0 / p["beta"])
        + log_w
    )
    w = np.subtract.outer(x, p["means"])  # (N, K), reused in place below
    w *= prec
    np.square(w, out=w)
    w *= -0.5
    w += const
    top = w.max(axis=1, keepdims=True)
    log_resp = w
    log_resp -= top
    resp = np.exp(log_resp)
    norm = resp.sum(axis=1, keepdims=True)
    resp /= norm
    log_resp -= np.log(norm)
    entropy = -float(np.vdot(resp, log_resp))
    return resp, entropy


def kmeans_1d(x: np.ndarray, k: int, seed: int, iters: int = 30) -> np.ndarray:
    """Cluster labels (N,) from Lloyd's algorithm started at jittered quantiles (1-D k-means)."""
    rng = np.random.default_rng(seed)
    qs = (np.arange(k) + rng.uniform(0.25, 0.75, k)) / k
    centres = np.quantile(x, np.sort(qs))
    labels = np.zeros(len(x), dtype=np.int64)
    for _ in range(iters):
        new = np.abs(x[:, None] - centres).argmin(axis=1)
        if np.array_equal(new, labels) and _ > 0:
            break
        labels = new
        sums = np.bincount(labels, weights=x, minlength=k)
        counts = np.bincount(labels, minlength=k)
        centres = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
    return labels
