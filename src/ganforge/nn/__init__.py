"""Layers and transforms shared by several families (D wrapper, stabiliser layers, DiffAugment,
conditioning, style-based generator layers)."""

from .conditional import ConditionalBatchNorm, ConditionalSequential, ProjectionDiscriminator
from .diffaug import diff_augment
from .discriminator import Discriminator, apply_spectral_norm
from .layers import MinibatchDiscrimination, MinibatchStd
from .style import (
    EqualConv2d,
    EqualLinear,
    MappingNetwork,
    ModulatedConv2d,
    NoiseInput,
    SynthesisLayer,
    ToRGB,
    modulated_conv2d,
)

__all__ = [
    "ConditionalBatchNorm",
    "ConditionalSequential",
    "Discriminator",
    "EqualConv2d",
    "EqualLinear",
    "MappingNetwork",
    "MinibatchDiscrimination",
    "MinibatchStd",
    "ModulatedConv2d",
    "NoiseInput",
    "ProjectionDiscriminator",
    "SynthesisLayer",
    "ToRGB",
    "apply_spectral_norm",
    "diff_augment",
    "modulated_conv2d",
]
