"""Inception Score from a classifier's class probabilities (Salimans et al. 2016, Sec. 4).

    IS = exp(E_x KL(p(y|x) || p(y))),   p(y) = E_x p(y|x),

computed on each of `n_splits` consecutive parts of the samples (p(y) is the marginal of that part,
as in the original code) and reported as (mean, std) over parts. It ranges from 1 (every sample gets
the same prediction) to the number of classes K (confident predictions spread evenly over K classes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

_EPS = 1e-12  # probabilities are clamped before the log; 0 * log(eps) = 0 keeps 0 log 0 = 0


def inception_score(probs: ArrayLike, n_splits: int = 10) -> tuple[float, float]:
    """(mean, std) of exp(E_x KL(p(y|x) || p(y))) over `n_splits` parts of probs (N, K), in float64.

    Rows of probs must be probability vectors (softmax outputs, not logits). std has ddof=0, as the
    original implementation.
    """
    p = torch.as_tensor(probs, dtype=torch.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K), got shape {tuple(p.shape)}")
    if not 1 <= n_splits <= p.shape[0]:
        raise ValueError(f"n_splits must be in [1, {p.shape[0]}] for {p.shape[0]} samples, got {n_splits}")
    if (p < 0).any() or not torch.allclose(p.sum(dim=1), torch.ones(1, dtype=p.dtype), atol=1e-3):
        raise ValueError("probs rows must be non-negative and sum to 1 (apply softmax to logits first)")
    n = p.shape[0]
    scores = []
    for i in range(n_splits):
        part = p[i * n // n_splits : (i + 1) * n // n_splits]  # (n_i, K)
        log_p = part.clamp_min(_EPS).log()
        log_py = part.mean(dim=0).clamp_min(_EPS).log()  # (K,) log marginal
        kl = (part * (log_p - log_py)).sum(dim=1)  # (n_i,) KL(p(y|x) || p(y))
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(correction=0))
