"""Layers of style-based generators: StyleGAN (Karras et al. 2019, "A Style-Based Generator
Architecture for Generative Adversarial Networks") as revised by StyleGAN2 (Karras et al. 2020,
"Analyzing and Improving the Image Quality of StyleGAN").

- Equalized learning rate (Karras et al. 2018, Sec. 4.1): weights are stored N(0, 1) and scaled
  at runtime by c = lr_mul / sqrt(fan_in), so Adam's step is the same in every layer; the mapping
  network learns 100x slower (lr_mul = 0.01; Karras et al. 2019, App. C).
- The mapping network z -> w: pixel norm, then fully connected layers with LeakyReLU(0.2)
  (Karras et al. 2019, Sec. 2).
- Modulated convolution with weight demodulation (Karras et al. 2020, Sec. 2.2, Eq. 1-3):
  w'_ijk = s_i w_ijk, then w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + eps), run as one grouped
  convolution with a weight tensor per sample. The styles s come from w through a learnt affine
  layer whose bias starts at 1.
- Per-pixel noise inputs scaled by a learnt per-channel strength (Karras et al. 2019, Sec. 3.2).
- toRGB: a modulated 1x1 convolution without demodulation (Karras et al. 2020, Fig. 7b).

Activations are LeakyReLU(0.2) times sqrt(2), the gain that keeps their second moment at that of
the input under the N(0, 1) equalized-lr initialisation (StyleGAN2's `lrelu` convention). Plain
torch only (no custom CUDA ops): the same code runs on CPU and CUDA, in either memory format.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAPPING_LR_MUL = 0.01  # Karras et al. 2019, App. C: the mapping network learns 100x slower


def lrelu(x: Tensor) -> Tensor:
    """LeakyReLU(0.2) with gain sqrt(2) (StyleGAN2's default activation)."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """x / sqrt(mean_j x_j^2 + eps) over the feature axis (Karras et al. 2018, Eq. in Sec. 4.2)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling (B, C, H, W) -> (B, C, 2H, 2W): with half-pixel centres it is the
    separable [1, 3, 3, 1] / 4 filter StyleGAN2 upsamples with (edges replicated)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def downsample2x(x: Tensor) -> Tensor:
    """2x2 average pooling (B, C, H, W) -> (B, C, H/2, W/2)."""
    return F.avg_pool2d(x, 2)


class EqualLinear(nn.Linear):
    """Fully connected layer with equalized learning rate: y = x (c W)^T + lr_mul b, W ~ N(0, 1/lr_mul^2),
    c = lr_mul / sqrt(in_features) (Karras et al. 2018, Sec. 4.1; lr_mul as StyleGAN2). The
    effective bias starts at `bias_init`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        lr_mul: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.lr_mul = lr_mul
        self.weight_gain = lr_mul / math.sqrt(in_features)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0 / lr_mul)
            if self.bias is not None:
                self.bias.fill_(bias_init / lr_mul)

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.weight_gain, bias)


class EqualConv2d(nn.Conv2d):
    """Same-padded convolution with equalized learning rate: W ~ N(0, 1) used as W / sqrt(C_in k^2)
    (Karras et al. 2018, Sec. 4.1); zero bias. A subclass of nn.Conv2d, so spectral normalisation
    and the engine's channels-last handling reach it."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0)
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.weight_gain, self.bias)


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> w (B, w_dim): pixel norm, then n_layers x [EqualLinear (lr_mul 0.01) ->
    LeakyReLU(0.2)] (Karras et al. 2019, Sec. 2 and App. C)."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int) -> None:
        super().__init__()
        widths = [z_dim] + [w_dim] * n_layers
        self.layers = nn.ModuleList(
            EqualLinear(widths[i], widths[i + 1], lr_mul=MAPPING_LR_MUL) for i in range(n_layers)
        )

    def forward(self, z: Tensor) -> Tensor:
        x = pixel_norm(z)
        for layer in self.layers:
            x = lrelu(layer(x))
        return x  # (B, w_dim)


def demodulation(weight: Tensor, s: Tensor, eps: float = 1e-8) -> Tensor:
    """Demodulation coefficients d_bj = (sum_{i,k} (s_bi w_jik)^2 + eps)^-1/2 (Karras et al. 2020,
    Eq. 3) of weight (O, I, kh, kw) under styles s (B, I): (B, O). Scaling output channel j of
    sample b by d_bj gives the modulated weights s_i w_jik (Eq. 1) unit L2 norm."""
    return (s.square() @ weight.square().sum(dim=(2, 3)).t() + eps).rsqrt()


def modulated_conv2d(x: Tensor, weight: Tensor, s: Tensor, demodulate: bool = True) -> Tensor:
    """Same-padded convolution of each sample of x (B, I, H, W) with its own modulated (and
    demodulated) weights s_i w_jik d_j (Karras et al. 2020, Sec. 2.2) -> (B, O, H, W).

    Computed as StyleGAN2's non-fused form: scaling input channels by s, one ordinary convolution
    with the shared weight, then scaling output channels by d. It is the same function as the
    per-sample (grouped) convolution, faster on CPUs, and keeps channels-last layouts."""
    s = s.to(weight.dtype)
    out = F.conv2d(x * s[:, :, None, None], weight, padding=weight.shape[-1] // 2)
    if demodulate:
        out = out * demodulation(weight, s)[:, :, None, None]
    return out


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled per sample by styles s = A(w), an affine
    layer of w with bias 1 (Karras et al. 2019, Sec. 2; 2020, Sec. 2.2); weights equalized-lr."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate

    def forward(self, x: Tensor, w: Tensor) -> Tensor:  # x (B, I, H, W), w (B, w_dim)
        return modulated_conv2d(x, self.weight * self.weight_gain, self.affine(w), self.demodulate)


class NoiseInput(nn.Module):
    """x + strength_c * n with one N(0, 1) noise image n per sample, shared by the channels and
    scaled per channel by a learnt strength that starts at 0 (Karras et al. 2019, Sec. 3.2, Fig. 1b).
    In training the noise is drawn afresh from torch's global generator (checkpointed by the
    engine); in eval mode a fixed noise image is used, so sampling is a function of z alone."""

    def __init__(self, channels: int, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        if self.training:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        return x + self.strength.reshape(1, -1, 1, 1).to(x.dtype) * noise


class SynthesisLayer(nn.Module):
    """[upsample x2 ->] 3x3 modulated, demodulated conv -> noise -> bias -> LeakyReLU
    (one style-driven layer of the synthesis network, Karras et al. 2020, Fig. 2d)."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool, noise: bool
    ) -> None:
        super().__init__()
        self.up = up
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, demodulate=True)
        self.noise = NoiseInput(out_channels, resolution) if noise else None
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        if self.up:
            x = upsample2x(x)
        x = self.conv(x, w)
        if self.noise is not None:
            x = self.noise(x)
        return lrelu(x + self.bias.reshape(1, -1, 1, 1))


class ToRGB(nn.Module):
    """Features (B, C, H, W) -> image (B, C_img, H, W): modulated 1x1 conv, no demodulation, plus
    bias, no activation (Karras et al. 2020, Fig. 7b)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return self.conv(x, w) + self.bias.reshape(1, -1, 1, 1)
