"""Train the digits classifier that ganforge ships for digits-FID, IS and GAN-test accuracy.

    python benchmarks/train_digits_classifier.py            # writes src/ganforge/assets/digits_classifier.safetensors
    python benchmarks/train_digits_classifier.py --out /tmp/d.safetensors --epochs 5   # a quick try

The network is `ganforge.metrics.extractors.DigitsNet`. It trains on the ganforge `digits` dataset
(scikit-learn's 8x8 digits at 32 px) minus the held-out images (every 4th, `digits_split`), with
augmentation so that it generalises to generated samples rather than to 1,348 exact images: random
affine warps (rotation, scale, shifts of up to 3 px), a round trip through a lower resolution (as a
run at `data.resolution=16` produces), thinner or thicker strokes, dimmer ink and pixel noise.
After training, the 64-d features are scaled to a mean square of 1 on the training images (the
logits do not change), the size KID's kernel expects. Everything is seeded (weights, batch order, augmentation) and runs on one CPU thread, so the same
machine and torch version give the same bytes. Prints and appends one JSON line (date, machine,
versions, accuracies) to benchmarks/results/digits_classifier.jsonl; the accuracies also go into the
weights file's metadata.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor

from ganforge.config import DataConfig
from ganforge.data import load_dataset, resize_images
from ganforge.metrics.extractors import DIGITS_WEIGHTS, DigitsNet, digits_input, digits_split

RESULTS = Path(__file__).parent / "results" / "digits_classifier.jsonl"


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random warps of images x (N, 1, 32, 32) in [0, 1] (ink = 1, background = 0)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(12)
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (3 / 16)  # 3 px of 32 in [-1, 1] coordinates
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (N, 2, 3) output -> input coordinates
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # A third of the images pass through 8, 12, 16 or 24 px and back.
    pick = torch.randint(12, (n,), generator=gen)
    for i, size in enumerate((8, 12, 16, 24)):
        m = pick == i
        if m.any():
            low = resize_images(x[m] * 2 - 1, size)
            x[m] = (resize_images(low, 32) + 1) / 2

    # Strokes: a sixth thicker (3x3 max), a sixth thinner (3x3 min, blended to keep thin strokes).
    stroke = torch.randint(6, (n,), generator=gen)
    thick, thin = stroke == 0, stroke == 1
    if thick.any():
        x[thick] = F.max_pool2d(x[thick], 3, 1, 1)
    if thin.any():
        x[thin] = 0.5 * x[thin] - 0.5 * F.max_pool2d(-x[thin], 3, 1, 1)

    ink = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=gen)  # dimmer ink
    noise = 0.05 * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    return (x * ink + noise).clamp(0, 1)


@torch.no_grad()
def accuracy(model: DigitsNet, x01: Tensor, y: Tensor) -> float:
    model.eval()
    _, logits = model(digits_input(x01))
    return float((logits.argmax(1) == y).double().mean())


def digits_at(resolution: int) -> tuple[Tensor, Tensor]:
    """The ganforge digits dataset at `resolution` px, as images in [0, 1], and labels."""
    ds = load_dataset(DataConfig(name="digits", resolution=resolution))
    assert ds.y is not None
    return (ds.x + 1) / 2, ds.y


@torch.no_grad()
def normalise_features(model: DigitsNet, x01: Tensor) -> float:
    """Scale the hidden layer so that the mean squared feature over x01 is 1, and the head inversely.

    ReLU is positively homogeneous, so features scale by s and logits are unchanged. KID's cubic
    kernel (x.y / d + 1)^3 assumes features of about unit size, as Inception's pool3 features are.
    """
    model.eval()
    features, _ = model(digits_input(x01))
    s = float(features.pow(2).mean().rsqrt())
    model.hidden.weight.mul_(s)
    model.hidden.bias.mul_(s)
    model.head.weight.div_(s)
    return s


def train(epochs: int, batch_size: int, lr: float, seed: int) -> tuple[DigitsNet, dict[str, float]]:
    x, y = digits_at(32)
    tr, held = digits_split(len(x))
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = DigitsNet()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        model.train()
        perm = tr[torch.randperm(len(tr), generator=gen)]
        total = 0.0
        for idx in perm.split(batch_size):
            logits = model(digits_input(augment(x[idx].clone(), gen)))[1]
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            print(
                f"epoch {epoch + 1:3d}  loss {total / len(tr):.4f}  held-out acc {accuracy(model, x[held], y[held]):.4f}"
            )

    scale = normalise_features(model, x[tr])
    report = {
        "feature_scale": scale,
        "held_out_accuracy": accuracy(model, x[held], y[held]),
        "train_accuracy": accuracy(model, x[tr], y[tr]),
    }
    for res in (8, 16):  # what runs at data.resolution=8 or 16 train on; the classifier resizes to 32
        xr, yr = digits_at(res)
        report[f"held_out_accuracy_{res}px"] = accuracy(model, xr[held], yr[held])
    aug_gen = torch.Generator().manual_seed(seed + 1)
    report["held_out_accuracy_augmented"] = accuracy(model, augment(x[held].clone(), aug_gen), y[held])
    return model, {k: round(v, 4) for k, v in report.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = reproducible bytes)")
    p.add_argument("--out", type=Path, default=DIGITS_WEIGHTS)
    p.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, report = train(args.epochs, args.batch_size, args.lr, args.seed)
    seconds = time.perf_counter() - t0
    _, held = digits_split(1797)
    meta = {
        "format": "ganforge-digits-classifier/1",
        "script": "benchmarks/train_digits_classifier.py",
        "seed": args.seed,
        "epochs": args.epochs,
        "n_train": 1797 - len(held),
        "n_held_out": len(held),
        **report,
    }
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(args.out), metadata={"ganforge": json.dumps(meta)})
    size = args.out.stat().st_size
    print(json.dumps(report, indent=2))
    print(
        f"wrote {args.out} ({size / 1024:.0f} KiB, {sum(v.numel() for v in state.values())} parameters) in {seconds:.0f} s"
    )

    if not args.no_record:
        record = {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "benchmark": "digits_classifier",
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
            },
            "versions": {"torch": torch.__version__},
            "config": {k: v for k, v in vars(args).items() if k not in ("out", "no_record")},
            "seconds": round(seconds, 1),
            "file_bytes": size,
            **meta,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
