"""Training diagnostics: the live monitor of mode collapse, oscillation, vanishing gradients, divergence."""

from .monitor import (
    KINDS,
    Finding,
    Monitor,
    check_divergence,
    check_mode_collapse,
    check_oscillation,
    check_vanishing,
    cure,
    mean_pairwise_distance,
)

__all__ = [
    "KINDS",
    "Finding",
    "Monitor",
    "check_divergence",
    "check_mode_collapse",
    "check_oscillation",
    "check_vanishing",
    "cure",
    "mean_pairwise_distance",
]
