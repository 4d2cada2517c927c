"""The FID Inception-v3 feature extractor (pool3, 2048-d) and its 1008-class logits, offline.

Network: Inception-v3 (Szegedy et al. 2016, "Rethinking the Inception Architecture") as ported
from TensorFlow's 2015-12-05 graph for FID (Heusel et al. 2017) by pytorch-fid. It is
torchvision's ``Inception3(num_classes=1008, aux_logits=False)`` with the TF graph's quirks:
every in-block average pool ignores padded zeros (``count_include_pad=False``) and the last
block (Mixed_7c) pools its pool branch with a *max* pool. Parameter names and shapes equal
pytorch-fid's ``FIDInceptionV3``, so ``pt_inception-2015-12-05-6726825d.pth`` loads strictly.

Preprocessing (``resize``):
  - "legacy": pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``:
    ``F.interpolate(bilinear, align_corners=False)`` to 299x299, then ``2x - 1``.
  - "clean": clean-fid (Parmar et al. 2022, "On Aliased Resizing and Surprising Subtleties in
    GAN Evaluation"): quantise to uint8, resize each channel as a float32 PIL image with
    antialiased bicubic filtering, clip to [0, 255], then ``(x - 128) / 128`` as clean-fid's
    TF-ported network does. Numbers from the two modes are not comparable; the mode is returned
    in the features' metadata.

Weights are read from a local file only (no download): ``load_fid_inception(path)`` or the
``GANFORGE_INCEPTION_WEIGHTS`` environment variable; ``.pth`` files are read with
``torch.load(weights_only=True)``, never by full unpickling.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..errors import GanforgeError

Resize = Literal["legacy", "clean"]
RESIZE_MODES: tuple[str, ...] = ("legacy", "clean")
SIZE = 299  # the input resolution the TF graph was trained at
ENV_VAR = "GANFORGE_INCEPTION_WEIGHTS"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"


# --------------------------------------------------------------------------- network


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps=1e-3, the TF value) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, **conv_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TF's 3x3 'SAME' average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b..5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)  # (N, 64 + 64 + 96 + pool_features, 35, 35)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)  # (N, 384 + 96 + c_in, 17, 17)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b..6e)."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)  # (N, 768, 17, 17)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)  # (N, 320 + 192 + c_in, 8, 8)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 convolutions (Mixed_7b: avg pool, Mixed_7c: max pool)."""

    def __init__(self, c_in: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        # The TF graph's last block max-pools here (kept for FID compatibility, see pytorch-fid).
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _tf_avg_pool(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)  # (N, 320 + 768 + 768 + 192 = 2048, 8, 8)


class FIDInception(nn.Module):
    """Inception-v3 for FID/IS: (N, 3, 299, 299) in [-1, 1] -> (pool3 (N, 2048), logits (N, 1008))."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, 1008)  # 1008 = the TF graph's 1000 ImageNet classes + 8 unused
        self.weights_name: str | None = None  # file the weights came from, for reports

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # x: (N, 3, 299, 299)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = self.maxpool1(x)  # (N, 64, 73, 73)
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (N, 2048, 8, 8)
        pool = torch.flatten(self.avgpool(x), 1)  # (N, 2048) "pool3"
        return pool, self.fc(pool)  # dropout of the torchvision model is a no-op in eval


# --------------------------------------------------------------------------- preprocessing


def _check_images(images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise GanforgeError(f"Inception expects images as (N, 3, H, W) or (N, 1, H, W) tensors, got {shape}")
    if images.dtype != torch.uint8:
        lo, hi = float(images.min()), float(images.max())
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):  # also catches NaN
            raise GanforgeError(
                f"Inception expects images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]"
                " (map [-1, 1] images with (x + 1) / 2)"
            )
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # greyscale -> RGB


def _pil_bicubic(channel: np.ndarray, size: int) -> np.ndarray:
    # clean-fid make_resizer("PIL", False, "bicubic", (size, size)) on one (H, W) channel:
    # float32 'F' image, Pillow's antialiased bicubic, clipped to [0, 255].
    img = Image.fromarray(channel.astype(np.float32))  # float32 2-D -> mode 'F'
    return np.asarray(img.resize((size, size), resample=Image.Resampling.BICUBIC)).clip(0, 255)


def preprocess(images: Tensor, resize: Resize = "legacy", size: int = SIZE) -> Tensor:
    """(N, 3|1, H, W) float in [0, 1] or uint8 -> (N, 3, size, size) float32 network input in [-1, 1]."""
    x = _check_images(images)
    if resize == "legacy":
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return 2 * x - 1
    if resize == "clean":
        if x.dtype != torch.uint8:  # round to the 8-bit image a PNG of this sample would hold
            x = (x.float() * 255 + 0.5).clamp(0, 255).to(torch.uint8)
        u8 = x.cpu().numpy()  # (N, 3, H, W) uint8
        out = np.empty((u8.shape[0], 3, size, size), dtype=np.float32)
        for n in range(u8.shape[0]):
            for c in range(3):
                out[n, c] = _pil_bicubic(u8[n, c], size)
        return (torch.from_numpy(out).to(images.device) - 128) / 128  # the TF graph's normalisation
    raise GanforgeError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")


# --------------------------------------------------------------------------- weights


def _missing_weights_message() -> str:
    return (
        f"FID/IS need the Inception weights file {WEIGHTS_FILE} (from the pytorch-fid GitHub release: "
        f"{WEIGHTS_URL}); pass it with --inception-weights PATH or set {ENV_VAR}=PATH"
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a .safetensors or .pth file; .pth only through torch's weights-only unpickler."""
    path = Path(path)
    if not path.is_file():
        raise GanforgeError(f"Inception weights not found at {path}. {_missing_weights_message()}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif path.suffix in (".pth", ".pt"):
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise GanforgeError(f"{path}: Inception weights must be a .pth or .safetensors file")
    except GanforgeError:
        raise
    except Exception as e:  # unpickling refusals, truncated files, bad headers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GanforgeError(f"{path}: cannot read Inception weights ({first})") from e
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GanforgeError(f"{path}: not a state dict of tensors (expected {WEIGHTS_FILE})")
    return dict(state)


def _fit_state_dict(model: FIDInception, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Check keys and shapes against the model; name the first differences."""
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}  # e.g. fp16 exports
    for k in own:  # BatchNorm step counters are unused in eval; some exports omit them
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros((), dtype=torch.long)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)}!={tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise GanforgeError(
            f"{path} is not the FID Inception state dict ({WEIGHTS_FILE}): {'; '.join(parts)}"
        )
    return state


def load_fid_inception(path: str | Path | None = None, device: torch.device | str = "cpu") -> FIDInception:
    """FIDInception in eval mode with weights from `path` or $GANFORGE_INCEPTION_WEIGHTS; never downloads."""
    path = path or os.environ.get(ENV_VAR) or None
    if path is None:
        raise GanforgeError(_missing_weights_message())
    path = Path(path).expanduser()
    with torch.device("meta"):  # no random init of 24M weights that are overwritten at once
        model = FIDInception()
    model.load_state_dict(_fit_state_dict(model, read_state_dict(path), path), strict=True, assign=True)
    model.weights_name = path.name
    return model.eval().requires_grad_(False).to(device)


def convert_to_safetensors(pth_path: str | Path, out_path: str | Path) -> Path:
    """Write the (checked) FID Inception weights of a .pth file as .safetensors; returns out_path."""
    from safetensors.torch import save_file

    pth_path, out_path = Path(pth_path), Path(out_path)
    with torch.device("meta"):
        skeleton = FIDInception()
    state = _fit_state_dict(skeleton, read_state_dict(pth_path), pth_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(out_path), metadata={"source": pth_path.name}
    )
    return out_path


# --------------------------------------------------------------------------- batched features


def _chunks(images: Tensor | Iterable[Tensor], batch_size: int) -> Iterator[Tensor]:
    batches = [images] if isinstance(images, Tensor) else images
    for batch in batches:
        if not isinstance(batch, Tensor):
            raise GanforgeError(f"image batches must be tensors, got {type(batch).__name__}")
        yield from batch.split(batch_size)


def inception_features(
    model: FIDInception,
    images: Tensor | Iterable[Tensor],
    batch_size: int = 50,
    resize: Resize = "legacy",
    with_logits: bool = True,
    dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """Features of images in [0, 1] (a tensor or an iterable of batches), batch by batch.

    Returns {"pool": (N, 2048), "logits": (N, 1008), "logits_unbiased": (N, 1008), "meta": {...}}
    on the CPU in `dtype`. "logits" is fc(pool) as in torchvision/pytorch-fid; "logits_unbiased"
    is pool @ fc.weight.T, the logits of the original Inception Score code (and torch-fidelity).
    "meta" records the resize mode and weights file, so a number can say how it was measured.
    At most `batch_size` 299x299 images exist at a time.
    """
    if resize not in RESIZE_MODES:
        raise GanforgeError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZE_MODES)}")
    if batch_size < 1:
        raise GanforgeError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()  # BatchNorm must use the TF running statistics
    device = next(model.parameters()).device
    pools: list[Tensor] = []
    logits: list[Tensor] = []
    for chunk in _chunks(images, batch_size):
        with torch.inference_mode():
            pool, logit = model(preprocess(chunk.to(device), resize))
            pools.append(pool.to("cpu", dtype))
            if with_logits:
                logits.append(logit.to("cpu", dtype))
    if not pools:
        raise GanforgeError("no images to compute Inception features of")
    # Concatenate outside inference mode so callers get ordinary tensors.
    out: dict[str, Any] = {"pool": torch.cat(pools)}
    if with_logits:
        out["logits"] = torch.cat(logits)
        out["logits_unbiased"] = out["pool"] @ model.fc.weight.detach().to("cpu", dtype).T
    out["meta"] = {
        "extractor": "inception-v3-fid",
        "resize": resize,
        "weights": model.weights_name,
        "n": out["pool"].shape[0],
    }
    return out
