"""Layers and transforms shared by several families (D wrapper, stabiliser layers, DiffAugment)."""

from .diffaug import diff_augment
from .discriminator import Discriminator, apply_spectral_norm
from .layers import MinibatchDiscrimination, MinibatchStd

__all__ = ["Discriminator", "MinibatchDiscrimination", "MinibatchStd", "apply_spectral_norm", "diff_augment"]
