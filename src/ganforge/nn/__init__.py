"""Layers and transforms shared by several families (D wrapper, stabiliser layers, DiffAugment, conditioning)."""

from .conditional import ConditionalBatchNorm, ConditionalSequential, ProjectionDiscriminator
from .diffaug import diff_augment
from .discriminator import Discriminator, apply_spectral_norm
from .layers import MinibatchDiscrimination, MinibatchStd

__all__ = [
    "ConditionalBatchNorm",
    "ConditionalSequential",
    "Discriminator",
    "MinibatchDiscrimination",
    "MinibatchStd",
    "ProjectionDiscriminator",
    "apply_spectral_norm",
    "diff_augment",
]
