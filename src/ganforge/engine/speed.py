"""The engine's speed options, applied in one place: memory format, compilation, mixed precision.

- `train.channels_last` (on by default): conv weights and image batches in NHWC order, which
  oneDNN's and cuDNN's fastest convolution kernels use. It applies only when G or D has 2-D
  convolutions and the data are images. Measured on a 2-core CPU (README, "Speed"): 1.4x for
  PyTorch-GAN's upsample+conv DCGAN, 1.08x for ganforge's transposed-conv DCGAN at 32 px; results
  equal the NCHW ones to float rounding (summation order).
- `train.fuse_upsample` (on by default): every nearest-x2 upsample followed by a plain 3x3 conv
  (the resize-conv up-block of PyTorch-GAN, SNGAN, BigGAN) is computed as one 4x4 stride-2
  transposed convolution of the low-resolution input (:mod:`ganforge.nn.upconv`): the same
  function with 2.25x fewer FLOPs and no upsampled tensor; parameter names are unchanged.
- `train.compile`: `torch.compile` of G and D in place (`nn.Module.compile`, so parameter names
  and checkpoints are unchanged). If compilation cannot be set up, training runs eagerly and one
  warning line says why.
- `train.amp`: autocast of the forward passes (losses included) to bfloat16 on CPU or CUDA, or
  float16 on CUDA with a dynamic loss scale (`torch.amp.GradScaler`, Micikevicius et al. 2018).
  Parameters, gradients and optimiser states stay float32. With fp16 an overflowing step is
  skipped by the divergence guard (the unscaled gradient norm is inf) and the scale halves.
  The loss scale is not checkpointed: a resumed fp16 run starts from the initial scale again.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..errors import ConfigError, GanforgeWarning
from ..nn.upconv import fuse_upsample_convs

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class SpeedWarning(GanforgeWarning):
    """A speed option could not be applied; training goes on without it."""


def check_amp(amp: str, device: torch.device) -> None:
    """fp16 needs CUDA (loss scaling and fast half kernels); bf16 runs on CPU and CUDA."""
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.amp=fp16 needs a CUDA device, but training runs on {device.type}; "
            "use train.amp=bf16 or off"
        )
    if amp == "bf16" and device.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.amp=bf16 runs on cpu or cuda, not {device.type}; use train.amp=off")


def prepare_modules(
    G: nn.Module, D: nn.Module, t: TrainConfig, image_data: bool, second_order: str = ""
) -> bool:
    """Apply `train.fuse_upsample`, `train.channels_last`, `train.amp` and `train.compile` to G and D, in place.
    `second_order` names what differentiates D's gradient (e.g. "R1"), if anything: torch.compile
    has no double backward, so D then stays eager. Returns whether image batches should be
    channels-last (conv nets on image data only)."""
    if t.amp != "off":
        # D's logits to float32, so the losses (softplus, means over the batch) are not computed
        # with bf16's 8-bit mantissa.
        D.register_forward_hook(lambda module, inputs, out: out.float())
    if t.fuse_upsample:
        fuse_upsample_convs(G)
        fuse_upsample_convs(D)
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    has_convs = any(isinstance(m, convs) for m in (*G.modules(), *D.modules()))
    channels_last = t.channels_last and image_data and has_convs
    if channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    if t.compile:
        if second_order:
            warnings.warn(
                f"train.compile: D stays eager ({second_order} needs a double backward through D, "
                "which torch.compile does not support); G is compiled",
                SpeedWarning,
                stacklevel=3,
            )
        try:
            G.compile()
            if not second_order:
                D.compile()
        except Exception as err:  # noqa: BLE001 - any failure to compile means: run eagerly
            for module in (G, D):
                module._compiled_call_impl = None  # undo a half-done compile (G compiled, D not)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            warnings.warn(
                f"train.compile: torch.compile failed ({reason}); training eagerly",
                SpeedWarning,
                stacklevel=3,
            )
    return channels_last


def match_param_layouts(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimiser states (e.g. Adam's moments) their parameter's memory layout.
    Checkpoints hold contiguous tensors; the fused Adam kernels assume that a parameter, its
    gradient and its states share one layout, so channels-last parameters need channels-last states."""
    for p, state in opt.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def to_memory_format(batch: dict[str, Tensor], channels_last: bool) -> dict[str, Tensor]:
    """Image batches (B, C, H, W) in channels-last order when asked; everything else unchanged."""
    x = batch["x"]
    if channels_last and x.dim() == 4:
        batch = {**batch, "x": x.contiguous(memory_format=torch.channels_last)}
    return batch


class Precision:
    """Autocast for the forward passes, and the fp16 loss scale around backward and update."""

    def __init__(self, amp: str, device: torch.device) -> None:
        check_amp(amp, device)
        self.device_type = device.type
        self.dtype = AMP_DTYPES[amp]
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
        # fp16's lazy R1/R2 phase runs in float32 and unscaled (regulariser_autocast)
        self.regulariser_scaled = self.scaler is None

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device_type, dtype=self.dtype):
                yield

    @contextlib.contextmanager
    def regulariser_autocast(self) -> Iterator[None]:
        """Autocast for the lazy R1/R2 phase, except under fp16, where it runs in float32: its
        double backward through D overflows fp16 at any useful loss scale (on an H200, GradScaler
        skipped 11 of 170 DCGAN steps on R1 steps and the scale fell from 65536 to 16), and float32
        needs no scale at all (see :meth:`backward`)."""
        if not self.regulariser_scaled:
            with torch.autocast(self.device_type, enabled=False):
                yield
        else:
            with self.autocast():
                yield

    def backward(self, loss: Tensor, opt: torch.optim.Optimizer, scaled: bool = True) -> None:
        """loss.backward(); under fp16 on the scaled loss, leaving the gradients unscaled.
        `scaled=False`: a float32 loss (the regulariser phase), back-propagated as is."""
        if self.scaler is None or not scaled:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)  # true gradients for the norm, the guard and the step

    def stat(self, grad_norm: Tensor) -> Tensor:
        """A gradient norm for the stats. Under fp16 an overflow (inf) is the loss scale's business —
        the step is skipped and the scale shrinks — not a divergence: it is reported as 0."""
        if self.scaler is None:
            return grad_norm
        return torch.nan_to_num(grad_norm, nan=0.0, posinf=0.0, neginf=0.0)

    def update(self, scaled: bool = True) -> None:
        """After the optimiser step: grow or shrink the fp16 loss scale (not after an unscaled
        backward, which says nothing about the scale)."""
        if self.scaler is not None and scaled:
            self.scaler.update()
