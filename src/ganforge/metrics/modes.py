"""Mode-coverage metrics for targets with known modes.

- Gaussian mixtures with known centres (VEEGAN, Srivastava et al. 2017, synthetic experiments; PacGAN, Lin et al.
  2018, Sec. 5.1): each sample goes to its nearest centre and is "high quality" if within 3 std of it.
  A mode is captured if it is the nearest centre of at least one high-quality sample; reverse KL is
  KL(q || uniform) = sum_k q_k log(q_k K), with q the histogram of high-quality samples over the K
  modes and 0 log 0 = 0. The 3-std radius is Euclidean and suits the low-dimensional (2-D ring/grid)
  benchmarks: in D dimensions a true sample lies about std * sqrt(D) from its centre.
- Classifier-counted modes, e.g. Stacked MNIST's 1,000 modes (Metz et al. 2017, Unrolled GANs; Lin
  et al. 2018, Table 3): modes covered = classes predicted at least once; KL(q || uniform) of the predicted
  class histogram.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def kl_to_uniform(counts: Tensor) -> float:
    """KL(q || uniform over K) = sum_k q_k log(q_k K) for q = counts / counts.sum(); 0 log 0 = 0; nan if empty."""
    counts = counts.to(torch.float64)
    total = counts.sum()
    if total == 0:
        return math.nan
    q = counts[counts > 0] / total
    return float((q * (q * counts.numel()).log()).sum())


def gaussian_mixture_modes(
    samples: ArrayLike, centres: ArrayLike, std: float, n_std: float = 3.0
) -> dict[str, float]:
    """{'modes', 'hq_fraction', 'reverse_kl'} of samples (N, D) against mixture centres (K, D).

    `std` is the per-dimension std of each mixture component; high quality means within
    n_std * std (Euclidean) of the nearest centre. reverse_kl is nan when no sample is high quality.
    """
    x = torch.as_tensor(samples, dtype=torch.float64)
    c = torch.as_tensor(centres, dtype=torch.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(
            f"samples (N, D) and centres (K, D) must share D, got {tuple(x.shape)} and {tuple(c.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError("no samples")
    dist, nearest = torch.cdist(x, c).min(dim=1)  # (N,), (N,)
    hq = dist <= n_std * std
    counts = torch.bincount(nearest[hq], minlength=c.shape[0])  # (K,) high-quality samples per mode
    return {
        "modes": int((counts > 0).sum()),
        "hq_fraction": float(hq.double().mean()),
        "reverse_kl": kl_to_uniform(counts),
    }


def class_histogram_metrics(pred_labels: ArrayLike, n_classes: int) -> dict[str, float]:
    """{'modes', 'kl'} of predicted class labels (N,) in [0, n_classes): the Stacked MNIST protocol."""
    y = torch.as_tensor(pred_labels)
    if y.ndim != 1 or y.numel() == 0 or y.is_floating_point():
        raise ValueError(
            f"pred_labels must be a non-empty 1-D integer tensor, got {y.dtype} {tuple(y.shape)}"
        )
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise ValueError(f"pred_labels must lie in [0, {n_classes}), got [{int(y.min())}, {int(y.max())}]")
    counts = torch.bincount(y.long(), minlength=n_classes)  # (n_classes,)
    return {"modes": int((counts > 0).sum()), "kl": kl_to_uniform(counts)}
