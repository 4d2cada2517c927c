"""Metrics: pure functions over (N, D) feature tensors (or class probabilities / labels).

Feature extraction (Inception, classifiers) lives apart; everything here is testable with random
tensors and closed-form cases.
"""

from __future__ import annotations

from .fid import StreamingStats, feature_statistics, fid_from_features, frechet_distance, trace_sqrt_product
from .inception_score import inception_score
from .kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from .modes import class_histogram_metrics, gaussian_mixture_modes, kl_to_uniform
from .prdc import knn_radii, prdc

__all__ = [
    "StreamingStats",
    "class_histogram_metrics",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "gaussian_mixture_modes",
    "inception_score",
    "kernel_inception_distance",
    "kl_to_uniform",
    "knn_radii",
    "mmd2_unbiased",
    "polynomial_kernel",
    "prdc",
    "trace_sqrt_product",
]
