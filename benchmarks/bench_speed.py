"""Training and sampling speed of ganforge's engine against eriklindernoren/PyTorch-GAN's scripts.

The references are re-created here from their published definitions (PyTorch-GAN,
implementations/dcgan/dcgan.py and implementations/gan/gan.py): same layers, Adam(2e-4, (0.5,
0.999)), BCE on sigmoid outputs, batch 64, and their step order (G step on fresh fakes, then a D
step that reuses those fakes, detached). Their data loader is replaced by batches indexed from
the same in-memory tensor ganforge uses, and numpy noise by `torch.randn`, so only the step is timed.

Rows per GAN:
  ref        the PyTorch-GAN step, as published
  engine     the SAME networks trained by ganforge's Trainer (`fit()`, default engine settings:
             EMA of G, gradient norms, divergence guard). They are registered below as a
             benchmark-local family; D drops the final sigmoid because the engine's `ns` loss takes
             logits (the same BCE, computed stably). Default engine settings include
             train.channels_last=true and train.reuse_fakes=false: the D phase draws its own
             fakes (one more G forward per step), as in Goodfellow et al. (2014, Alg. 1).
  engine+reuse  the same with train.reuse_fakes=true: D trains on the previous G phase's fakes,
             the reference's order, so the difference to `ref` is engine overhead.
             `engine` computes the reference G's nearest-upsample + 3x3 conv blocks as 4x4 stride-2
             transposed convs (train.fuse_upsample, exact: 2.25x fewer FLOPs in those layers), so
             its FLOPs per step are lower than `ref`'s for the same function.
  engine-plainup  the same with train.fuse_upsample=false (the reference's FLOPs)
  engine-nchw / engine+compile / engine+bf16   the same with train.channels_last=false /
             train.compile=true / train.amp=bf16 (MLP: engine+bf16, engine+bf16+reuse)
  ganforge   ganforge's own family with the settings a user gets for 32-px digits (its recipe);
             ganforge-nchw: the same with train.channels_last=false

The style-based family (`stylegan`, its digits recipe: 32 px, batch 32) is timed alone, training
and sampling: the implementation a user would pick instead, NVlabs/stylegan2-ada-pytorch, needs
its own CUDA extensions for speed and is not re-created here.

Each variant is warmed up, then the variants are timed interleaved, `--repeats` times `--steps`
steps; medians and [min, max] of images/s are reported, and ratios to `ref` are medians of the
per-repeat ratios (the two were timed back to back, so machine load affects both alike). The
fraction of the fp32 matmul roof (the best FLOP/s of a 2048^3 `torch.matmul`, probed at the start
and after every repeat) uses the FLOPs of one step counted by
`torch.utils.flop_counter.FlopCounterMode`.

    python benchmarks/bench_speed.py               # as recorded
    python benchmarks/bench_speed.py --repeats 3   # quicker

Prints a table and appends one JSON line (date, machine, load, versions, figures) to
benchmarks/results/speed.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ganforge.api import build_config, data_config, spec_of, user_settings
from ganforge.data import load_dataset
from ganforge.engine import Trainer
from ganforge.engine.callbacks import Callback
from ganforge.errors import ConfigError
from ganforge.families import FAMILIES, Family

RESULTS = Path(__file__).parent / "results" / "speed.jsonl"
BATCH, LATENT = 64, 100
BATCH_STYLE = 32  # the stylegan digits recipe's batch
SECTIONS = (
    "dcgan32_train",
    "mlp28_train",
    "dcgan32_sample_b256",
    "stylegan32_train",
    "stylegan32_sample_b256",
)

# --- the references, re-created from PyTorch-GAN's published scripts -----------------------------


class RefDCGANGenerator(nn.Module):
    """z (100) -> Linear -> (128, 8, 8) -> BN -> [Upsample x2, Conv3x3, BN(eps 0.8), LeakyReLU] for
    128 and 64 channels -> Conv3x3 to the image channels -> tanh. (`BatchNorm2d(c, 0.8)` in the
    original sets eps = 0.8, not the momentum; kept, since it is what that code trains.)"""

    def __init__(self, channels: int, img: int = 32, latent: int = LATENT) -> None:
        super().__init__()
        self.init = img // 4
        self.l1 = nn.Linear(latent, 128 * self.init**2)
        self.conv = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, 1, 1),
            nn.BatchNorm2d(128, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, 1, 1),
            nn.BatchNorm2d(64, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, channels, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv(self.l1(z).view(z.shape[0], 128, self.init, self.init))  # (B, C, 32, 32)


def ref_dcgan_features(channels: int) -> nn.Sequential:
    """Four blocks Conv3x3 stride 2 (16, 32, 64, 128) + LeakyReLU + Dropout2d(0.25), BN(eps 0.8)
    on all but the first: (B, C, 32, 32) -> (B, 128, 2, 2)."""
    layers: list[nn.Module] = []
    c_in = channels
    for c_out, bn in ((16, False), (32, True), (64, True), (128, True)):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Dropout2d(0.25)]
        if bn:
            layers.append(nn.BatchNorm2d(c_out, 0.8))
        c_in = c_out
    return nn.Sequential(*layers)


class RefDCGANDiscriminator(nn.Module):
    def __init__(self, channels: int, img: int = 32) -> None:
        super().__init__()
        self.model = ref_dcgan_features(channels)
        self.adv = nn.Sequential(nn.Linear(128 * (img // 16) ** 2, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adv(self.model(x).flatten(1))  # (B, 1) probabilities


def ref_init(m: nn.Module) -> None:
    """PyTorch-GAN's weights_init_normal: conv N(0, 0.02); batch-norm scale N(1, 0.02), shift 0."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class RefMLPGenerator(nn.Module):
    """gan.py: 100 -> 128 -> 256 -> 512 -> 1024 (BN(eps 0.8) + LeakyReLU(0.2), none on the first)
    -> 784 -> tanh."""

    def __init__(self, shape: tuple[int, ...] = (1, 28, 28), latent: int = LATENT) -> None:
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(((latent, 128), (128, 256), (256, 512), (512, 1024))):
            layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b, 0.8)] if i else []), nn.LeakyReLU(0.2, True)]
        self.model = nn.Sequential(*layers, nn.Linear(1024, 784), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z).view(z.shape[0], *self.shape)


def ref_mlp_features() -> nn.Sequential:
    """gan.py's D without its last layer: 784 -> 512 -> 256, LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.LeakyReLU(0.2, True),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2, True),
    )


class RefMLPDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(ref_mlp_features(), nn.Linear(256, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (B, 1) probabilities


def ref_step(G: nn.Module, D: nn.Module, data: torch.Tensor, gen: torch.Generator) -> Callable[[], None]:
    """PyTorch-GAN's training step: G on fresh fakes, then D on the same fakes, detached."""
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    valid, fake = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)

    def step() -> None:
        real = data[torch.randint(len(data), (BATCH,), generator=gen)]
        opt_G.zero_grad()
        gen_imgs = G(torch.randn(BATCH, LATENT, generator=gen))
        g_loss = bce(D(gen_imgs), valid)
        g_loss.backward()
        opt_G.step()
        opt_D.zero_grad()
        d_loss = 0.5 * (bce(D(real), valid) + bce(D(gen_imgs.detach()), fake))
        d_loss.backward()
        opt_D.step()

    return step


# --- the same networks as a (benchmark-local) ganforge family ---------------------------------------


@dataclass
class RefNetConfig:
    z_dim: int = LATENT  # PyTorch-GAN's latent_dim

    def validate(self) -> None:
        if self.z_dim != LATENT:
            raise ConfigError(f"the PyTorch-GAN reference networks take z_dim={LATENT}")


@FAMILIES.register("bench-pytorchgan-dcgan")
class BenchRefDCGAN(Family):
    name = "bench-pytorchgan-dcgan"
    Config = RefNetConfig
    description = "benchmark only: PyTorch-GAN's DCGAN networks (32 px)"

    def build(self) -> tuple[nn.Module, nn.Module]:
        c = self.spec.shape[0]
        G, D = RefDCGANGenerator(c), self.make_discriminator(ref_dcgan_features(c), 128 * 2 * 2)
        G.apply(ref_init)
        D.apply(ref_init)
        return G, D


@FAMILIES.register("bench-pytorchgan-mlp")
class BenchRefMLP(Family):
    name = "bench-pytorchgan-mlp"
    Config = RefNetConfig
    description = "benchmark only: PyTorch-GAN's gan.py networks (28 px)"

    def build(self) -> tuple[nn.Module, nn.Module]:
        return RefMLPGenerator(self.spec.shape), self.make_discriminator(ref_mlp_features(), 256)


def make_trainer(model: str, resolution: int, *overrides: str) -> Trainer:
    settings = user_settings(
        None,
        [f"data.resolution={resolution}", f"train.batch_size={BATCH}", "train.device=cpu", *overrides],
        data="digits",
        model=model,
    )
    ds = load_dataset(data_config(settings))
    spec = spec_of(ds)
    return Trainer(build_config(settings, spec), spec, ds)


class StopAfterStep(Callback):
    def on_step_end(self, trainer: Trainer) -> None:
        trainer.stop_requested = True


def engine_step(tr: Trainer) -> Callable[[], None]:
    """One step of the real loop (`fit()`: step, guard check, stats flushed every log_every steps)."""
    tr.cfg.train.steps = 10**9
    tr.callbacks.append(StopAfterStep())

    def step() -> None:
        tr.stop_requested = False
        tr.fit()

    return step


# --- measurement ------------------------------------------------------------------------------------


def matmul_roof(n: int = 2048, repeats: int = 7) -> float:
    """Best fp32 FLOP/s of an n x n matmul (2 n^3 FLOPs), the machine's practical compute roof."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def count_flops(step: Callable[[], None]) -> int:
    """FLOPs of one steady-state step: the first step is run uncounted (with train.reuse_fakes the
    engine's first D phase draws its own fakes; later ones reuse the G phase's)."""
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


class Roof:
    """The best matmul FLOP/s seen: probed at the start and between repeats, since other jobs on a
    shared machine depress any single probe."""

    def __init__(self) -> None:
        self.best = 0.0

    def probe(self) -> float:
        self.best = max(self.best, matmul_roof(repeats=3))
        return self.best


def interleaved(
    variants: dict[str, Callable[[], None]], steps: int, repeats: int, warmup: int, roof: Roof
) -> dict:
    """Per variant: seconds per step for each repeat, the variants timed back to back."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
        roof.probe()
    return times


def summarise(times: dict[str, list[float]], per_call: int, ref: str | None = "ref") -> dict:
    out = {}
    for name, ts in times.items():
        rates = [per_call / t for t in ts]
        row = {"img_s": statistics.median(rates), "min": min(rates), "max": max(rates)}
        if ref is not None and name != ref:
            ratios = [r / t for r, t in zip(times[ref], ts)]  # (their s/step) / (ours): >1 means faster
            row["ratio_vs_ref"] = statistics.median(ratios)
            row["ratio_min"], row["ratio_max"] = min(ratios), max(ratios)
        out[name] = row
    return out


def sampler(G: nn.Module, n: int = 256) -> Callable[[], None]:
    z = torch.randn(n, LATENT)

    def sample() -> None:
        with torch.inference_mode():
            G(z)

    return sample


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to the results")
    args = parser.parse_args()
    load_start = os.getloadavg()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    roof = Roof()
    print(f"fp32 matmul (2048^3) at the start: {roof.probe() / 1e9:.1f} GFLOP/s; load {load_start}")

    # DCGAN at 32 px, 1 channel (digits), batch 64.
    tr_same = make_trainer("bench-pytorchgan-dcgan", 32)
    data32 = tr_same.data.x
    G_ref, D_ref = RefDCGANGenerator(1), RefDCGANDiscriminator(1)
    G_ref.apply(ref_init)
    D_ref.apply(ref_init)
    tr_dcgan = make_trainer("dcgan", 32)
    dcgan = {
        "ref": ref_step(G_ref, D_ref, data32, gen),
        "engine-plainup": engine_step(
            make_trainer("bench-pytorchgan-dcgan", 32, "train.fuse_upsample=false")
        ),
        "engine-nchw": engine_step(make_trainer("bench-pytorchgan-dcgan", 32, "train.channels_last=false")),
        "engine": engine_step(tr_same),
        "engine+reuse": engine_step(make_trainer("bench-pytorchgan-dcgan", 32, "train.reuse_fakes=true")),
        "engine+compile": engine_step(make_trainer("bench-pytorchgan-dcgan", 32, "train.compile=true")),
        "engine+bf16": engine_step(make_trainer("bench-pytorchgan-dcgan", 32, "train.amp=bf16")),
        "ganforge-nchw": engine_step(make_trainer("dcgan", 32, "train.channels_last=false")),
        "ganforge": engine_step(tr_dcgan),
    }
    flops = {name: count_flops(dcgan[name]) for name in ("ref", "engine", "engine-plainup", "ganforge")}
    t_dcgan = interleaved(dcgan, args.steps, args.repeats, args.warmup, roof)
    res_dcgan = summarise(t_dcgan, BATCH)

    # MLP GAN at 28 px (784), batch 64.
    tr_mlp_same = make_trainer("bench-pytorchgan-mlp", 28)
    G_mref, D_mref = RefMLPGenerator(), RefMLPDiscriminator()
    mlp = {
        "ref": ref_step(G_mref, D_mref, tr_mlp_same.data.x, gen),
        "engine": engine_step(tr_mlp_same),
        "engine+reuse": engine_step(make_trainer("bench-pytorchgan-mlp", 28, "train.reuse_fakes=true")),
        "engine+bf16": engine_step(make_trainer("bench-pytorchgan-mlp", 28, "train.amp=bf16")),
        "engine+bf16+reuse": engine_step(
            make_trainer("bench-pytorchgan-mlp", 28, "train.amp=bf16", "train.reuse_fakes=true")
        ),
        "ganforge": engine_step(make_trainer("mlp", 28)),
    }
    res_mlp = summarise(interleaved(mlp, 4 * args.steps, args.repeats, args.warmup, roof), BATCH)

    # Sampling at batch 256 under inference mode (G in eval mode; ganforge samples from G_ema).
    G_ref.eval()
    tr_plainup = make_trainer("bench-pytorchgan-dcgan", 32, "train.fuse_upsample=false")
    z = torch.randn(256, LATENT)
    sampling = {
        "ref": sampler(G_ref),
        "engine": lambda: tr_same.generate(z),
        "engine-plainup": lambda: tr_plainup.generate(z),
        "ganforge": lambda: tr_dcgan.generate(torch.randn(256, tr_dcgan.cfg.net.z_dim)),
    }
    res_sample = summarise(interleaved(sampling, args.steps, args.repeats, args.warmup, roof), 256)

    # The style-based family at its digits recipe (32 px, batch 32): no re-created reference (see
    # the module docstring), so rates only, training and sampling.
    tr_style = make_trainer("stylegan", 32, f"train.batch_size={BATCH_STYLE}")
    style = {"train": engine_step(tr_style)}
    res_style = summarise(
        interleaved(style, args.steps, args.repeats, args.warmup, roof), BATCH_STYLE, ref=None
    )
    z_style = torch.randn(256, tr_style.cfg.net.z_dim)
    res_style_sample = summarise(
        interleaved(
            {"sample": lambda: tr_style.generate(z_style)}, args.steps, args.repeats, args.warmup, roof
        ),
        256,
        ref=None,
    )

    for name, f in flops.items():  # against the best roof seen in the whole run
        res_dcgan[name]["gflop_step"] = f / 1e9
        res_dcgan[name]["roof_frac"] = f / statistics.median(t_dcgan[name]) / roof.best
    load_end = os.getloadavg()
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": "speed",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_start": load_start,
            "loadavg_end": load_end,
        },
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "config": {
            "batch": BATCH,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "ganforge_dcgan_net": vars(tr_dcgan.cfg.net),
        },
        "matmul_roof_gflops": roof.best / 1e9,
        "dcgan32_train": res_dcgan,
        "mlp28_train": res_mlp,
        "dcgan32_sample_b256": res_sample,
        "stylegan32_train": res_style,
        "stylegan32_sample_b256": res_style_sample,
    }
    print_table(record)
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS}")


def print_table(record: dict) -> None:
    m = record["machine"]
    print(
        f"\n{m['platform']}, {m['cpu_count']} CPUs, {m['torch_threads']} torch threads, load "
        f"{m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}, torch {record['versions']['torch']}, "
        f"fp32 matmul roof {record['matmul_roof_gflops']:.0f} GFLOP/s"
    )
    print(
        f"{'benchmark':<24}{'variant':<19}{'img/s median [min, max]':>28}{'x ref [min, max]':>22}{'roof':>8}"
    )
    for section in SECTIONS:
        for name, row in record.get(section, {}).items():
            ratio = (
                f"{row['ratio_vs_ref']:.2f} [{row['ratio_min']:.2f}, {row['ratio_max']:.2f}]"
                if "ratio_vs_ref" in row
                else "1"
            )
            roof = f"{100 * row['roof_frac']:.1f}%" if "roof_frac" in row else ""
            rate = f"{row['img_s']:.0f} [{row['min']:.0f}, {row['max']:.0f}]"
            print(f"{section:<24}{name:<19}{rate:>28}{ratio:>22}{roof:>8}")


if __name__ == "__main__":
    main()
