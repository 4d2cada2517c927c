"""CUDA check: every GAN family, the tabular model, mixed precision, compilation, sampling, speed at
scale and the Fréchet distance on a GPU, in one guarded run that records what it found.

Run from the repository root (ganforge need not be installed):

    PYTHONPATH=src python3 benchmarks/cuda_check.py OUT_DIR                   # GPU, all sections: ~5 minutes
    PYTHONPATH=src python3 benchmarks/cuda_check.py OUT_DIR --sections families,sampling,amp,scale --budget 150
                                                                              # GPU, the second run: ~110 s
    .venv/bin/python benchmarks/cuda_check.py /tmp/cc --device cpu --quick    # dry run of the same code on a CPU

One line per section (and per family or variant) is printed as it finishes; OUT_DIR/cuda_check.json
holds everything and is rewritten after every check, so a run cut short keeps what it did. A check
that raises records the end of its traceback and the run goes on. `--sections amp,compile` runs a
subset (env always runs first). `--budget S` (default 240 s; 170 s with --quick) decides whether the
optional parts start (stylegan's AMP rows, each compiled variant, scale's larger batches and its
compiled row), and a watchdog ends the run 30 s after the budget, whatever is running, leaving the
JSON marked "aborted". `--quick` shrinks step counts and sizes and uses tiny networks at 16 px in the
speed sections. With --device cuda on a machine without CUDA it records the environment and exits 0.

Sections, in the order they run:

  env       device, capability, bf16 support, torch / CUDA / cuDNN / Triton versions, TF32 flags
  families  every registered image or points family (mlp, dcgan, cgan, stylegan, ...) on each data
            kind it takes (digits, ring8), at its tiny widths, with train.deterministic=true: a
            40-step run, and a second run stopped at step 20 and resumed to 40, must end with the
            same G, D and G_ema (bitwise, and within 1e-6); the run folder loads, samples (the same
            seed gives the same samples, equal to the trained model's) and evaluates (all metric
            groups, 500 samples; the metrics must be finite, except reverse KL, which is NaN by
            definition when no mode is captured, as a 40-step ring8 model may). Warnings (e.g.
            non-deterministic CUDA kernels) are recorded.
  tabular   TabularGAN on a mixed-type DataFrame made here (numbers, categories, a boolean, missing
            values), amp off and bf16: fit on the device, sample, conditional samples, save, load on
            the device, same-seed samples equal, evaluate against the table
  tests     `pytest tests/test_speed.py tests/test_cli.py -k "cuda or fp16"` (on CUDA started in
            the background at the start, so it overlaps env, families and tabular); timeout 120 s;
            on a GPU test_fp16_on_cuda_trains must pass, not be skipped
  amp       dcgan on digits at batch 64 (its recipe, lazy R1 included) and stylegan (its recipe) in
            fp32, fp32 again (the noise floor), bf16 and fp16: the same steps from one seed compared
            with fp32 (first losses, G's weights and G's update), then train_step timed (warm-up,
            then synchronised it/s). For fp16 the GradScaler's skipped optimiser steps (per step, and
            which steps) and its loss scale (initial, after the compared steps, last) are recorded,
            and reported as a finding, as is a noise floor above the float32 tolerance
  sampling  G's images/s at batch 256 under inference mode and GAN.sample's end to end (dcgan,
            stylegan); the Fréchet distance of 2048-d features (10k per set): statistics on CPU and
            on the device, the distance, and that frechet_distance and fid_from_features take device
            tensors and give the CPU value
  scale     whether AMP and compile pay where the GPU is not launch-bound: first, where the time of
            the amp section's dcgan step (batch 64, 32 channels) goes: train_step's host time
            (perf_counter around it, without synchronize, on an idle GPU), with synchronize, back to
            back, and the GPU's busy time and kernel count from torch.profiler; then dcgan at 64
            channels, R1 off (so that compile covers D too), fp32 and bf16 images/s at batch 256,
            512 and 1024 (each larger batch only when cheap), and compile + bf16 at 256 if the budget
            allows; the TF32 flags are recorded. About 40 s on an H200
  compile   dcgan with R1 off (so that D compiles too: a double backward keeps D eager) eager, eager
            again (the noise floor), then train.compile=true and compile + bf16, and stylegan compiled
            if the budget allows: compared with eager as in `amp` (with inductor's fallback_random,
            so that stylegan's noise is the same draw), the first (compiling) step timed, graphs and
            graph breaks counted, then it/s. Last, because compiling costs the most time.

"Same results" (the checks' tolerances): a float32 variant (compile) must match fp32 eager to 1e-4
relative in G's weights after the compared steps and in the first step's losses (the tolerance of
tests/test_speed.py's compile test). bf16 and fp16 must give first-step losses within 5 %
(tests/test_speed.py's bf16 test), G's weights within 2 % relative (bf16 on a CPU: 0.6 % after 10
dcgan steps) and finite losses. Each tolerance is widened to 3x the measured noise floor where that
is larger: the reference run repeated (`fp32-again`, `eager-again`) is reported, never failed, since
on CUDA with deterministic mode off cuDNN's atomics-based kernels make two identical runs drift
apart (dcgan on an H200: 2.8e-3 in G's weights after 10 steps; 0 on a CPU). When step 0 skipped an
optimiser step (fp16: the GradScaler's initial scale of 65536 overflows), the losses computed after
that skipped update are not comparable: only Loss/D, computed before any update, is judged, and the
losses of the first step without skips are reported. G's update (weights after minus before) is
reported too but not judged: Adam's sign-like first steps make it differ by 10-20 % under bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import ganforge
from ganforge.api import GAN, build_config, data_config, spec_of, user_settings
from ganforge.data import load_dataset
from ganforge.engine import Trainer
from ganforge.engine.rng import seed_global_rngs
from ganforge.evaluate import evaluate
from ganforge.families import FAMILIES
from ganforge.metrics import feature_statistics, fid_from_features, frechet_distance
from ganforge.tabular import TabularGAN

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = sys.stdout  # progress lines go here even while a check's own output is captured
SECTIONS = ("env", "families", "tabular", "tests", "amp", "sampling", "scale", "compile")
DATA = {"image": "digits", "points": "ring8"}  # the built-in data each data kind is checked on
FP32_TOL = 1e-4  # float32 variants vs fp32 eager: G's weights and first-step losses, relative
LOW_LOSS_TOL = 0.05  # bf16/fp16: first-step losses, relative
LOW_WEIGHT_TOL = 0.02  # bf16/fp16: G's weights after the compared steps, relative
RESUME_TOL = 1e-6  # resumed vs uninterrupted run: largest absolute difference of any weight
TEST_TIMEOUT = 120  # seconds for the pytest run
WATCHDOG_GRACE = 30  # seconds past --budget before the run is ended, whatever is running


@dataclass(frozen=True)
class Sizes:
    steps: int  # families: steps of a run; the split run stops at steps // 2
    n_sample: int  # families: samples drawn per check
    n_eval: int  # families: samples evaluated
    eval_metrics: str  # families: metric groups evaluated
    tab_rows: int
    tab_epochs: int
    tab_batch: int
    tab_dims: tuple[int, ...]
    tab_z: int
    tab_n: int  # tabular: rows sampled per check
    compare_steps: int  # amp/compile: steps compared with fp32 eager
    warmup: int  # steps before timing
    timed: int  # dcgan steps timed
    timed_style: int  # stylegan steps timed
    sample_reps: int  # batches of 256 timed in `sampling`
    fid_n: int  # features per set in the Fréchet timing
    fid_dim: int
    style_amp_need: float  # seconds of budget left needed to start stylegan's AMP rows
    compile_need: float  # ... to start a compiled dcgan variant
    style_compile_need: float  # ... to start a compiled stylegan variant
    tiny_speed_nets: bool  # amp/compile/sampling/scale: tiny widths at 16 px instead of the recipes' networks
    scale_batches: tuple[int, ...]  # scale: the batch sizes (each after the first only when cheap)
    scale_channels: int  # scale: dcgan's g_channels and d_channels (ignored with tiny_speed_nets)
    scale_warmup: int  # scale: steps after the first before timing
    scale_timed: int  # scale: steps timed per row
    host_steps: int  # scale: steps per host_breakdown measurement
    profile_steps: int  # scale: steps under torch.profiler
    scale_row_max_s: float  # scale: largest predicted cost (s) of a larger batch's rows
    scale_compile_need: float  # scale: seconds of budget left needed to start compile + bf16


FULL = Sizes(
    steps=40, n_sample=64, n_eval=500, eval_metrics="fid,kid,pr,dc,is,modes",
    tab_rows=1200, tab_epochs=4, tab_batch=200, tab_dims=(256, 256), tab_z=128, tab_n=500,
    compare_steps=10, warmup=10, timed=150, timed_style=60, sample_reps=50, fid_n=10_000, fid_dim=2048,
    style_amp_need=40, compile_need=45, style_compile_need=90, tiny_speed_nets=False,
    scale_batches=(256, 512, 1024), scale_channels=64, scale_warmup=5, scale_timed=30, host_steps=30,
    profile_steps=5, scale_row_max_s=8, scale_compile_need=40,
)  # fmt: skip
QUICK = Sizes(
    steps=6, n_sample=16, n_eval=200, eval_metrics="fid,pr,is,modes",
    tab_rows=400, tab_epochs=1, tab_batch=100, tab_dims=(32,), tab_z=16, tab_n=100,
    compare_steps=3, warmup=1, timed=3, timed_style=2, sample_reps=2, fid_n=1000, fid_dim=256,
    style_amp_need=30, compile_need=30, style_compile_need=60, tiny_speed_nets=True,
    scale_batches=(16, 32), scale_channels=4, scale_warmup=1, scale_timed=2, host_steps=2,
    profile_steps=1, scale_row_max_s=20, scale_compile_need=45,
)  # fmt: skip


# --------------------------------------------------------------------------- recording


def tail(text: str, lines: int = 8) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def jsonable(value: Any) -> Any:
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


class Report:
    """The JSON record: written atomically after every check, so a timeout keeps what was done."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.path = out / "cuda_check.json"
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {
            "script": "benchmarks/cuda_check.py",
            "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "args": vars(args),
            "summary": {},
            "sections": {},
        }

    def write(self) -> None:
        """Replace the file; when the record cannot be serialised (the watchdog's write racing a
        change in the main thread), try again, then keep the last good file."""
        with self.lock:
            for _ in range(3):
                try:
                    text = json.dumps(self.data, indent=1, default=jsonable)
                    break
                except (RuntimeError, TypeError, ValueError):
                    time.sleep(0.05)
            else:
                return
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)


@contextlib.contextmanager
def captured(rec: dict[str, Any]) -> Iterator[None]:
    """Keep warnings and printed output out of the console: the distinct warnings (up to 8) and the
    end of the output go into `rec`."""
    buf = io.StringIO()
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(buf),
        contextlib.redirect_stderr(buf),
    ):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen: dict[str, int] = {}
            for w in caught:
                key = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:300]}"
                seen[key] = seen.get(key, 0) + 1
            if seen:
                rec["warnings"] = [f"{k} (x{n})" if n > 1 else k for k, n in list(seen.items())[:8]]
            if buf.getvalue().strip():
                rec["output"] = tail(buf.getvalue(), 6)


@contextlib.contextmanager
def guarded(rec: dict[str, Any], report: Report) -> Iterator[None]:
    """Run one check: an exception is recorded, not raised: rec["exception"] (its first line) and
    rec["error"] (the end of its traceback)."""
    t0 = time.perf_counter()
    try:
        with captured(rec):
            yield
    except Exception as err:
        message = str(err).strip().splitlines()
        rec["exception"] = f"{type(err).__name__}: {message[0] if message else ''}"[:300]
        rec["error"] = tail(traceback.format_exc(), 12)
    finally:
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        report.write()


def outcomes(rec: Any, prefix: str = "") -> tuple[list[str], list[str], list[str]]:
    """(passed checks, failed checks, errors) found anywhere under a section's record."""
    passed: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    if not isinstance(rec, dict):
        return passed, failed, errors
    for name, ok in (rec.get("checks") or {}).items():
        (passed if ok else failed).append(f"{prefix}{name}")
    if "error" in rec:
        errors.append(f"{prefix.rstrip('/') or 'section'}: {rec.get('exception') or rec['error']}")
    for key, value in rec.items():
        if key != "checks" and isinstance(value, dict):
            p, f, e = outcomes(value, f"{prefix}{key}/")
            passed, failed, errors = passed + p, failed + f, errors + e
    return passed, failed, errors


def say(line: str) -> None:
    print(line, file=CONSOLE, flush=True)


def set_checks(rec: dict[str, Any], **checks: Any) -> None:
    rec.setdefault("checks", {}).update({k: bool(v) for k, v in checks.items()})


# --------------------------------------------------------------------------- the run


class Deadline:
    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    report: Report
    deadline: Deadline
    tmp: Path
    tests: subprocess.Popen | None = None  # the background pytest run
    tests_log: Path | None = None
    tests_started: float = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def default_kernels() -> dict[str, bool]:
    """Undo train.deterministic's process-wide switches (the engine never does) before timing;
    returns the switches as they were."""
    was = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = False
    return was


def speed_nets(ctx: Context, model: str) -> list[str]:
    """The networks of the speed sections: the recipe's, or tiny ones at 16 px for a dry run."""
    if not ctx.sizes.tiny_speed_nets:
        return []
    return [f"net.{k}={v}" for k, v in FAMILIES.get(model).tiny.items()] + ["data.resolution=16"]


def build_trainer(model: str, data: str, overrides: list[str], device: torch.device) -> Trainer:
    """A Trainer with the family's recipe (as `ganforge.train` builds it, without a run folder),
    and the global RNGs seeded as a fresh run seeds them."""
    settings = user_settings(None, overrides, data=data, model=model, device=str(device))
    ds = load_dataset(data_config(settings))
    spec = spec_of(ds)
    trainer = Trainer(build_config(settings, spec), spec, ds)
    seed_global_rngs(trainer.cfg.train.seed)
    return trainer


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def g_vector(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in trainer.G.parameters()])


# --------------------------------------------------------------------------- env


def section_env(ctx: Context, rec: dict[str, Any]) -> str:
    rec.update(
        torch=torch.__version__,
        cuda=torch.version.cuda,
        python=platform.python_version(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        ganforge=ganforge.__version__,
        device=str(ctx.device),
        gcc=shutil.which("gcc") or shutil.which("cc"),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    with contextlib.suppress(Exception):
        rec["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    with contextlib.suppress(ImportError):
        import triton

        rec["triton"] = triton.__version__
    if ctx.device.type != "cuda" or not torch.cuda.is_available():
        rec["cuda_available"] = torch.cuda.is_available()
        return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, CUDA not used"
    props = torch.cuda.get_device_properties(ctx.device)
    rec.update(
        name=props.name,
        capability=list(torch.cuda.get_device_capability(ctx.device)),
        memory_gib=round(props.total_memory / 2**30, 1),
        multiprocessors=props.multi_processor_count,
        bf16=torch.cuda.is_bf16_supported(),
        cudnn=torch.backends.cudnn.version(),
        tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        tf32_cudnn=torch.backends.cudnn.allow_tf32,
        float32_matmul_precision=torch.get_float32_matmul_precision(),
    )
    return (
        f"{props.name}, sm_{''.join(map(str, rec['capability']))}, {rec['memory_gib']} GiB, "
        f"bf16 {rec['bf16']}, torch {torch.__version__} (CUDA {torch.version.cuda})"
    )


# --------------------------------------------------------------------------- families


def compare_states(a: torch.nn.Module, b: torch.nn.Module) -> dict[str, Any]:
    """Bitwise equality and the largest absolute difference of two modules' state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    differ = [k for k in sa if k not in sb or not torch.equal(sa[k], sb[k])]
    diffs = [
        float((sa[k].double() - sb[k].double()).abs().max())
        for k in sa
        if k in sb and sa[k].is_floating_point() and sa[k].numel()
    ]
    out: dict[str, Any] = {
        "bitwise": not differ and list(sa) == list(sb),
        "max_abs_diff": max(diffs, default=0.0),
    }
    if differ:
        out["differ"] = f"{len(differ)} of {len(sa)} tensors, e.g. {', '.join(differ[:3])}"
    return out


def family_case(ctx: Context, model: str, data: str, rec: dict[str, Any]) -> None:
    s, dev = ctx.sizes, ctx.device
    half = s.steps // 2
    tiny = [f"net.{k}={v}" for k, v in FAMILIES.get(model).tiny.items()]
    settings = [*tiny, "train.deterministic=true", f"train.log_every={half}", f"train.ckpt_every={half}"]
    common: dict[str, Any] = {"data": data, "model": model, "device": str(dev), "progress": False}
    root = ctx.tmp / f"{model}-{data}"

    t0 = time.perf_counter()
    full = ganforge.train(
        out=root / "full", steps=s.steps, overrides=[*settings, "train.sample_every=0"], **common
    )
    ctx.sync()
    rec["train_s"] = round(time.perf_counter() - t0, 2)
    ganforge.train(out=root / "split", steps=half, overrides=[*settings, "train.sample_every=0"], **common)
    split = ganforge.train(out=root / "split", steps=s.steps, resume=True, progress=False, device=str(dev))
    nets = {"G": (full.trainer.G, split.trainer.G), "D": (full.trainer.D, split.trainer.D)}
    if full.trainer.G_ema is not None:
        nets["G_ema"] = (full.trainer.G_ema, split.trainer.G_ema)
    rec["resume"] = {name: compare_states(a, b) for name, (a, b) in nets.items()}
    last = json.loads((root / "full" / "stats.jsonl").read_text().splitlines()[-1])
    rec["loss_last"] = {k: v for k, v in last.items() if k.startswith("Loss")}
    params_on = {p.device.type for p in full.trainer.G.parameters()} | {
        p.device.type for p in full.trainer.D.parameters()
    }
    set_checks(
        rec,
        on_device=params_on == {dev.type},
        resume_bitwise=all(r["bitwise"] for r in rec["resume"].values()),
        resume_close=all(r["max_abs_diff"] <= RESUME_TOL for r in rec["resume"].values()),
    )

    gan = ganforge.load(root / "full", device=str(dev))
    x1, x2 = gan.sample(s.n_sample, seed=1), gan.sample(s.n_sample, seed=1)
    x_trained = full.sample(s.n_sample, seed=1)
    rec["sample_shape"] = list(x1.shape)
    rec["load_vs_trained_max_abs_diff"] = float((x1 - x_trained).abs().max())
    set_checks(
        rec,
        sample_shape=tuple(x1.shape) == (s.n_sample, *gan.spec.shape),
        sample_finite=torch.isfinite(x1).all(),
        sample_same_seed=torch.equal(x1, x2),
        load_matches_trained=torch.equal(x1, x_trained),
    )
    if gan.spec.kind == "image":
        set_checks(rec, sample_in_0_1=bool((x1 >= 0).all() and (x1 <= 1).all()))
    if gan.trainer.family.conditional:
        labels = [i % gan.spec.n_classes for i in range(s.n_sample)][::-1]
        set_checks(rec, sample_labels=gan.sample(s.n_sample, labels=labels).shape == x1.shape)

    result = evaluate(root / "full", metrics=s.eval_metrics, n=s.n_eval, device=str(dev))
    rec["metrics"] = {k: round(v, 5) for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    rec["eval_s"] = result.get("seconds")
    set_checks(rec, metrics_finite=bool(rec["metrics"]) and not metrics_not_finite(rec))


def metrics_not_finite(rec: dict[str, Any]) -> list[str]:
    """The metrics that are NaN or inf, less the documented NaN: reverse KL (`rkl`) is NaN when no
    sample is high quality (ganforge.metrics.modes), i.e. when no mode is captured, as after a
    short run; that case is noted in rec["metrics_note"], not failed."""
    metrics = rec["metrics"]
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if "rkl" in bad and math.isnan(metrics["rkl"]) and metrics.get("modes") == 0:
        bad.remove("rkl")
        rec["metrics_note"] = "rkl is NaN because no mode was captured (modes 0): its documented value then"
    if bad:
        rec["metrics_not_finite"] = bad
    return bad


def section_families(ctx: Context, rec: dict[str, Any]) -> str:
    cases = [
        (name, DATA[kind]) for name, family in FAMILIES.items() for kind in family.data_kinds if kind in DATA
    ]
    rec["cases"] = [f"{m}/{d}" for m, d in cases]
    for model, data in cases:
        sub = rec.setdefault(f"{model}/{data}", {})
        with guarded(sub, ctx.report):
            family_case(ctx, model, data, sub)
        failed = [k for k, ok in sub.get("checks", {}).items() if not ok]
        status = "error" if "error" in sub else f"FAIL {', '.join(failed)}" if failed else "ok"
        say(f"    {model}/{data}: {status} ({sub['seconds']} s)")
    # train.deterministic switches process-wide settings that the engine never switches back
    rec["deterministic_left_on"] = default_kernels()
    return f"{len(cases)} family/data cases"


# --------------------------------------------------------------------------- tabular


def make_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Mixed types: an integer, a bimodal float with 5 % missing, a category with missing values,
    a boolean, a second float and a text category."""
    rng = np.random.default_rng(seed)
    income = np.where(rng.random(n) < 0.6, rng.normal(30_000, 4_000, n), rng.normal(85_000, 9_000, n))
    income[rng.random(n) < 0.05] = np.nan
    color = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]).astype(object)
    color[rng.random(n) < 0.05] = None
    member = rng.random(n) < 0.3
    return pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": income.round(2),
            "color": color,
            "member": member,
            "score": np.where(member, rng.normal(2.0, 0.5, n), rng.normal(-1.0, 1.0, n)).round(3),
            "city": rng.choice(["Oslo", "Lima", "Pune", "Kobe", "Graz"], n),
        }
    )


def tabular_case(ctx: Context, df: pd.DataFrame, csv: Path, amp: str, rec: dict[str, Any]) -> None:
    s, dev = ctx.sizes, ctx.device
    t0 = time.perf_counter()
    model = TabularGAN(
        epochs=s.tab_epochs,
        batch_size=s.tab_batch,
        z_dim=s.tab_z,
        g_dims=s.tab_dims,
        d_dims=s.tab_dims,
        device=str(dev),
        amp=amp,
        seed=0,
    ).fit(df)
    ctx.sync()
    rec["fit_s"] = round(time.perf_counter() - t0, 2)
    assert model.trainer is not None
    rec["steps"] = model.info.get("steps")
    rec["loss_last"] = (
        {k: v for k, v in model.stats[-1].items() if k.startswith("Loss")} if model.stats else {}
    )
    synth = model.sample(s.tab_n, seed=1)
    red = model.sample(s.tab_n, conditions={"color": "red"}, seed=2)
    members = model.sample(s.tab_n, conditions={"member": True}, seed=3)
    folder = model.save(ctx.tmp / f"tabular-{amp}")
    loaded = TabularGAN.load(folder, device=str(dev))
    same = model.sample(s.tab_n, seed=7).equals(loaded.sample(s.tab_n, seed=7))
    same_cond = model.sample(s.tab_n, conditions={"color": "blue"}, seed=8).equals(
        loaded.sample(s.tab_n, conditions={"color": "blue"}, seed=8)
    )
    rec["dtypes"] = {c: str(t) for c, t in synth.dtypes.items()}
    set_checks(
        rec,
        on_device=next(model.trainer.G.parameters()).device.type == dev.type,
        loaded_on_device=loaded.trainer is not None and loaded.trainer.device.type == dev.type,
        losses_finite=bool(rec["loss_last"]) and all(map(math.isfinite, rec["loss_last"].values())),
        sample_rows=len(synth) == s.tab_n,
        sample_columns=list(synth.columns) == list(df.columns),
        sample_dtypes=rec["dtypes"] == {c: str(t) for c, t in df.dtypes.items()},
        condition_category=len(red) == s.tab_n and bool((red["color"] == "red").all()),
        condition_boolean=len(members) == s.tab_n and bool(members["member"].all()),
        load_same_samples=same,
        load_same_conditional_samples=same_cond,
    )
    result = evaluate(folder, metrics="fid,pr", n=s.tab_n, against=str(csv), device=str(dev))
    rec["metrics"] = {k: round(v, 5) for k, v in result["metrics"].items()}
    set_checks(rec, metrics_finite=all(map(math.isfinite, rec["metrics"].values())))


def section_tabular(ctx: Context, rec: dict[str, Any]) -> str:
    df = make_table(ctx.sizes.tab_rows)
    csv = ctx.tmp / "table.csv"
    df.to_csv(csv, index=False)
    rec["table"] = {"rows": len(df), "dtypes": {c: str(t) for c, t in df.dtypes.items()}}
    for amp in ("off", "bf16"):
        with guarded(rec.setdefault(f"amp={amp}", {}), ctx.report):
            tabular_case(ctx, df, csv, amp, rec[f"amp={amp}"])
    return f"{len(df)} rows, amp off and bf16"


# --------------------------------------------------------------------------- tests


def start_tests(ctx: Context) -> None:
    """pytest on the CUDA-only tests, in the background: output to a file (not a pipe, which
    could fill and stall it), results to a JUnit XML file."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    )
    ctx.tests_log = ctx.tmp / "pytest.log"
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/test_speed.py", "tests/test_cli.py", "-k", "cuda or fp16", f"--junitxml={ctx.tmp / 'pytest.xml'}",
    ]  # fmt: skip
    with ctx.tests_log.open("w") as log:
        ctx.tests = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    ctx.tests_started = time.perf_counter()


def section_tests(ctx: Context, rec: dict[str, Any]) -> str:
    if ctx.tests is None:
        start_tests(ctx)
    assert ctx.tests is not None and ctx.tests_log is not None
    rec["command"] = " ".join(map(str, ctx.tests.args))
    left = TEST_TIMEOUT - (time.perf_counter() - ctx.tests_started)
    try:
        rec["returncode"] = ctx.tests.wait(timeout=max(left, 1.0))
    except subprocess.TimeoutExpired:
        ctx.tests.kill()
        ctx.tests.wait()
        rec["returncode"] = None
        rec["timed_out"] = True
    rec["waited_s"] = round(time.perf_counter() - ctx.tests_started, 1)
    if rec["returncode"] != 0:
        rec["output_tail"] = tail(ctx.tests_log.read_text(errors="replace"), 30)
    xml = ctx.tmp / "pytest.xml"
    rec["tests"] = junit_outcomes(xml) if xml.is_file() else {}
    counts = {
        k: sum(v.split(":")[0] == k for v in rec["tests"].values()) for k in ("passed", "skipped", "failed")
    }
    rec["summary"] = ", ".join(f"{n} {k}" for k, n in counts.items()) + f" (return code {rec['returncode']})"
    set_checks(rec, pytest_passed=rec["returncode"] == 0 and counts["passed"] > 0)
    if ctx.device.type == "cuda":  # on a GPU the CUDA test must run, not be skipped
        set_checks(rec, fp16_cuda_test_ran=rec["tests"].get("test_fp16_on_cuda_trains") == "passed")
    return rec["summary"]


def junit_outcomes(path: Path) -> dict[str, str]:
    """{test name: passed | skipped: reason | failed: message} from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("skipped", "failure", "error"):
            node = case.find(tag)
            if node is not None:
                word = "skipped" if tag == "skipped" else "failed"
                outcome = f"{word}: {(node.get('message') or '').strip()[:150]}"
        out[case.get("name", "?")] = outcome
    return out


# --------------------------------------------------------------------------- amp and compile


@dataclass
class VariantRun:
    start: torch.Tensor  # G's weights before training
    end: torch.Tensor  # ... after compare_steps steps
    stats: list[dict[str, float]]  # per step
    summary: dict[str, Any]


def float_stats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in stats.items()}


def train_variant(ctx: Context, model: str, overrides: list[str], timed: int) -> VariantRun:
    """compare_steps train_steps from the seed (each read back), then warm-up and timed steps.
    The guard's skipped optimiser steps are kept as device tensors while timing (no host sync)
    and read once at the end, with the fp16 loss scale before, after the compared steps and last."""
    s, dev = ctx.sizes, ctx.device
    t0 = time.perf_counter()
    trainer = build_trainer(model, "digits", [*speed_nets(ctx, model), *overrides], dev)
    build_s = time.perf_counter() - t0
    scaler = trainer.precision.scaler
    scale_initial = float(scaler.get_scale()) if scaler is not None else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = g_vector(trainer)
    t0 = time.perf_counter()
    stats = [float_stats(trainer.train_step())]
    first_s = time.perf_counter() - t0
    stats += [float_stats(trainer.train_step()) for _ in range(s.compare_steps - 1)]
    end = g_vector(trainer)
    scale_compared = float(scaler.get_scale()) if scaler is not None else None
    later_skips = [trainer.train_step()["Guard/skipped"] for _ in range(s.warmup)]
    ctx.sync()
    t0 = time.perf_counter()
    for _ in range(timed):
        later_skips.append(trainer.train_step()["Guard/skipped"])
    ctx.sync()
    seconds = time.perf_counter() - t0
    t, stab = trainer.cfg.train, trainer.cfg.stab
    by_step = [st.get("Guard/skipped", 0.0) for st in stats]
    if later_skips:
        by_step += torch.stack(later_skips).float().cpu().tolist()
    summary: dict[str, Any] = {
        "batch_size": t.batch_size,
        "n_dis": t.n_dis,
        "build_s": round(build_s, 2),
        "first_step_s": round(first_s, 3),
        "it_per_s": round(timed / seconds, 2),
        "images_per_s": round(timed * t.batch_size / seconds, 1),
        "timed_steps": timed,
        "skipped_steps": sum(by_step[: len(stats)]),  # optimiser steps skipped in the compared steps
        "skipped_by_step": by_step[: len(stats)],
        "first_losses": {k: round(v, 6) for k, v in stats[0].items() if k.startswith("Loss")},
        "compiled": {
            "G": trainer.G._compiled_call_impl is not None,
            "D": trainer.D._compiled_call_impl is not None,
        },
    }
    if scaler is not None:
        skip_steps = [i for i, n in enumerate(by_step) if n > 0]
        reg = bool(stab.r1_gamma or stab.r2_gamma)
        summary["fp16_scaler"] = {
            "steps_run": len(by_step),
            "skipped_optimizer_steps": sum(by_step),
            "steps_with_skips": skip_steps[:40],
            "reg_every": stab.reg_every if reg else None,
            "skips_on_reg_steps": sum(i % stab.reg_every == 0 for i in skip_steps) if reg else None,
            "loss_scale_initial": scale_initial,
            "loss_scale_after_compared": scale_compared,
            "loss_scale_final": float(scaler.get_scale()),
        }
        summary["loss_scale"] = summary["fp16_scaler"]["loss_scale_final"]
    if dev.type == "cuda":
        summary["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    return VariantRun(start, end, stats, summary)


def loss_rel(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Relative difference of each loss term the two steps share (Loss/D, Loss/G, Loss/D_r1, ...)."""
    keys = [k for k in a if k.startswith("Loss/") and k in b]
    return {k: abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in keys}


FLOOR_FACTOR = 3.0  # variants are judged against max(tolerance, FLOOR_FACTOR x the measured floor)


def is_floor(name: str) -> bool:
    """`fp32-again`, `eager-again`: the reference run repeated, which measures the noise floor."""
    return name.endswith("-again")


def compare_variant(
    run: VariantRun, ref: VariantRun, low_precision: bool, floor: dict[str, Any] | None = None
) -> dict[str, Any]:
    """How far `run` is from the fp32 eager `ref` after the same steps, and whether that is the
    same result within the tolerances of the module docstring, widened to FLOOR_FACTOR times the
    noise `floor` (the comparison of the repeated reference) where that is larger.

    When either run skipped an optimiser step in step 0 (fp16: GradScaler's initial scale
    overflows), only the loss terms computed before any update of step 0 are judged (Loss/D with
    n_dis = 1); the others are reported, as are the losses of the first compared step with no skip."""
    first = loss_rel(run.stats[0], ref.stats[0])
    vs: dict[str, Any] = {
        "same_init": torch.equal(run.start, ref.start),
        "first_loss_rel": max(first.values(), default=math.nan),  # the largest over the loss terms
        "first_loss_rel_by_term": first,
        "last_loss_rel": max(loss_rel(run.stats[-1], ref.stats[-1]).values(), default=math.nan),
        "weights_rel": rel(run.end, ref.end),
        "weights_max_abs": float((run.end - ref.end).abs().max()),
        "update_rel": rel(run.end - run.start, ref.end - ref.start),
    }
    finite = all(math.isfinite(v) for st in run.stats for k, v in st.items() if k.startswith("Loss"))
    skips = [a.get("Guard/skipped", 0.0) + b.get("Guard/skipped", 0.0) for a, b in zip(run.stats, ref.stats)]
    judged = first
    if skips[0] > 0:
        pre_update = ["Loss/D"] if run.summary.get("n_dis") == 1 else []
        judged = {k: v for k, v in first.items() if k in pre_update}
        vs["first_loss_terms_judged"] = list(judged)
        vs["first_loss_note"] = (
            f"step 0 skipped {skips[0]:g} optimiser step(s) (fp16: GradScaler's initial scale overflowed), "
            "so its losses after the first update are reported, not judged"
        )
        clean = next((i for i, n in enumerate(skips) if n == 0), None)
        vs["first_clean_step"] = clean
        if clean is not None:
            vs["first_clean_step_loss_rel"] = loss_rel(run.stats[clean], ref.stats[clean])
    loss_tol, weight_tol = (LOW_LOSS_TOL, LOW_WEIGHT_TOL) if low_precision else (FP32_TOL, FP32_TOL)
    if floor is not None:
        vs["noise_floor"] = {k: floor[k] for k in ("first_loss_rel", "weights_rel")}
        loss_tol = max(loss_tol, FLOOR_FACTOR * floor["first_loss_rel"])
        weight_tol = max(weight_tol, FLOOR_FACTOR * floor["weights_rel"])
    vs["tolerance"] = {"first_loss_rel": loss_tol, "weights_rel": weight_tol}
    vs["checks"] = {"same_init": vs["same_init"], "losses_finite": finite}
    if judged:
        vs["first_loss_rel_judged"] = max(judged.values())
        vs["checks"]["first_losses_close"] = vs["first_loss_rel_judged"] <= loss_tol
    vs["checks"]["weights_close"] = vs["weights_rel"] <= weight_tol
    return vs


def measure_floor(run: VariantRun, ref: VariantRun) -> dict[str, Any]:
    """The reference repeated: how far two identical runs end apart (non-deterministic kernels;
    0 where kernels are deterministic, as on a CPU). Reported, never failed; it widens the
    tolerances of the variants after it."""
    vs = compare_variant(run, ref, low_precision=False)
    vs["noise_floor"] = True
    vs["deterministic"] = vs["weights_rel"] == 0 and vs["first_loss_rel"] == 0
    vs["within_fp32_tolerance"] = vs["weights_rel"] <= FP32_TOL and vs["first_loss_rel"] <= FP32_TOL
    del vs["tolerance"]
    vs.pop("first_loss_rel_judged", None)
    vs["checks"] = {k: vs["checks"][k] for k in ("same_init", "losses_finite")}
    return vs


def run_variants(
    ctx: Context,
    rec: dict[str, Any],
    model: str,
    base: list[str],
    variants: list[tuple[str, list[str]]],
    timed: int,
    need: float = 0.0,
) -> None:
    """Each variant (name, extra overrides) into rec[name]; the first is the fp32 eager reference,
    a name ending in -again repeats it to measure the noise floor (is_floor). Compiled variants
    start from a reset dynamo and wait for `need` seconds of budget."""
    from torch._dynamo.utils import counters

    ref: VariantRun | None = None
    floor: dict[str, Any] | None = None
    for name, extra in variants:
        sub = rec.setdefault(name, {})
        compiled = "train.compile=true" in extra
        if any(x == "train.amp=fp16" for x in extra) and ctx.device.type != "cuda":
            sub["skipped"] = "fp16 needs CUDA"
            continue
        if compiled and ctx.deadline.left() < need:
            sub["skipped"] = f"time budget: {ctx.deadline.left():.0f} s left, {need:.0f} s wanted"
            continue
        if compiled:
            torch._dynamo.reset()
            counters.clear()
        with guarded(sub, ctx.report):
            run = train_variant(ctx, model, [*base, *extra], timed)
            sub.update(run.summary)
            if compiled:  # the engine falls back to eager, with a SpeedWarning, if compiling fails
                set_checks(sub, compile_active=run.summary["compiled"]["G"])
                breaks = counters["graph_break"]
                sub["dynamo"] = {
                    "unique_graphs": counters["stats"].get("unique_graphs", 0),
                    "graph_breaks": sum(breaks.values()),
                    "break_reasons": [r[:200] for r in list(breaks)[:3]],
                }
            if name == variants[0][0]:
                ref = run
            elif ref is None:
                sub["vs_fp32_eager"] = {"error": f"no reference: {variants[0][0]} failed"}
            elif is_floor(name):
                sub["vs_fp32_eager"] = measure_floor(run, ref)
                floor = sub["vs_fp32_eager"]
            else:
                low = any(x in ("train.amp=bf16", "train.amp=fp16") for x in extra)
                sub["vs_fp32_eager"] = compare_variant(run, ref, low_precision=low, floor=floor)
        if "skipped" not in sub:
            say(f"    {model} {name}: {variant_line(sub)}")


def variant_line(sub: dict[str, Any]) -> str:
    """The console line of one variant: speed, distance from fp32 eager, verdict, fp16 scaler."""
    if "error" in sub:
        return "error"
    line = f"{sub.get('it_per_s', '-')} it/s"
    vs = sub.get("vs_fp32_eager") or {}
    if "checks" in vs:
        line += f", weights rel {vs['weights_rel']:.1e}, loss rel {vs['first_loss_rel']:.1e}"
        if vs.get("noise_floor") is True:
            return line + " (noise floor: reported, not judged)"
        tol = vs["tolerance"]
        if "first_loss_note" in vs:  # step 0 skipped an update: only the terms before it are judged
            terms = "+".join(vs["first_loss_terms_judged"]) or "none"
            line += (
                f" (step 0 skipped updates: judged {terms} {vs.get('first_loss_rel_judged', math.nan):.1e})"
            )
        ok = all(vs["checks"].values())
        line += f" ({'ok' if ok else 'FAIL'}; tol weights {tol['weights_rel']:.1e}, loss {tol['first_loss_rel']:.1e})"
    sc = sub.get("fp16_scaler")
    if sc:
        on_reg = f", {sc['skips_on_reg_steps']} on R1 steps" if sc["reg_every"] else ""
        line += (
            f"; fp16 scaler skipped {sc['skipped_optimizer_steps']:g} optimiser steps in {sc['steps_run']} steps"
            f"{on_reg}, scale {sc['loss_scale_initial']:g} -> {sc['loss_scale_final']:g}"
        )
    return line


AMP_VARIANTS = [
    ("fp32", ["train.amp=off"]),
    ("fp32-again", ["train.amp=off"]),
    ("bf16", ["train.amp=bf16"]),
    ("fp16", ["train.amp=fp16"]),
]


def section_amp(ctx: Context, rec: dict[str, Any]) -> str:
    s = ctx.sizes
    rec["kernels_before"] = default_kernels()
    run_variants(ctx, rec.setdefault("dcgan", {}), "dcgan", ["train.batch_size=64"], AMP_VARIANTS, s.timed)
    if ctx.deadline.left() < s.style_amp_need:
        rec["stylegan"] = {"skipped": f"time budget: {ctx.deadline.left():.0f} s left"}
    else:
        run_variants(ctx, rec.setdefault("stylegan", {}), "stylegan", [], AMP_VARIANTS, s.timed_style)
    rec["findings"] = findings(rec)
    for line in rec["findings"]:
        say(f"    finding: {line}")
    return "dcgan" + (" and stylegan" if "skipped" not in rec["stylegan"] else "")


def findings(rec: dict[str, Any]) -> list[str]:
    """Reported, not judged: a noise floor above the float32 tolerance, and what fp16's loss scale did."""
    out = []
    for model, rows in rec.items():
        if not isinstance(rows, dict):
            continue
        for name, sub in rows.items():
            vs = sub.get("vs_fp32_eager") if isinstance(sub, dict) else None
            if is_floor(name) and vs and vs.get("noise_floor") is True and not vs["within_fp32_tolerance"]:
                out.append(
                    f"{model} {name}: two identical fp32 runs end {vs['weights_rel']:.1e} apart in G's weights "
                    f"(non-deterministic kernels); the other rows are judged against {FLOOR_FACTOR:g}x that"
                )
            sc = sub.get("fp16_scaler") if isinstance(sub, dict) else None
            if sc and sc["skipped_optimizer_steps"]:
                on_reg = (
                    f", {sc['skips_on_reg_steps']} of them on lazy-R1 steps (every {sc['reg_every']})"
                    if sc["reg_every"]
                    else ""
                )
                out.append(
                    f"{model} {name}: GradScaler skipped {sc['skipped_optimizer_steps']:g} optimiser steps in "
                    f"{sc['steps_run']} train steps{on_reg}; the loss scale went {sc['loss_scale_initial']:g} -> "
                    f"{sc['loss_scale_after_compared']:g} after the compared steps -> {sc['loss_scale_final']:g}"
                )
    return out


def section_compile(ctx: Context, rec: dict[str, Any]) -> str:
    import torch._inductor.config

    s = ctx.sizes
    default_kernels()
    # Random draws inside compiled code (stylegan's noise inputs) through torch's generators, as
    # eager: inductor's own RNG would give other (equally valid) noise, so no comparison with eager.
    torch._inductor.config.fallback_random = True
    torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # graph breaks: counted below
    rec["inductor_fallback_random"] = True
    variants = [
        ("eager", []),
        ("eager-again", []),  # the noise floor (is_floor)
        ("compile", ["train.compile=true"]),
        ("compile+bf16", ["train.compile=true", "train.amp=bf16"]),
    ]
    base = ["train.batch_size=64", "stab.r1_gamma=0"]  # without R1, D compiles too
    run_variants(ctx, rec.setdefault("dcgan", {}), "dcgan", base, variants, s.timed, s.compile_need)
    style = rec.setdefault("stylegan", {})
    if ctx.deadline.left() < s.style_compile_need:
        style["skipped"] = (
            f"time budget: {ctx.deadline.left():.0f} s left, {s.style_compile_need:.0f} s wanted"
        )
    else:
        run_variants(
            ctx, style, "stylegan", ["stab.r1_gamma=0"], variants[:3], s.timed_style, s.style_compile_need
        )
    return "dcgan" + ("" if "skipped" in style else " and stylegan")


# --------------------------------------------------------------------------- sampling


def sampling_rate(ctx: Context, model: str, rec: dict[str, Any]) -> None:
    """G's forward at batch 256 (Trainer.generate: inference mode, eval mode) and GAN.sample."""
    s, dev = ctx.sizes, ctx.device
    trainer = build_trainer(model, "digits", speed_nets(ctx, model), dev)
    z = torch.randn(256, trainer.cfg.net.z_dim, device=dev)
    for _ in range(3):
        trainer.generate(z)
    ctx.sync()
    t0 = time.perf_counter()
    for _ in range(s.sample_reps):
        x = trainer.generate(z)
    ctx.sync()
    rec["g_forward_images_per_s"] = round(s.sample_reps * 256 / (time.perf_counter() - t0), 1)
    n = s.sample_reps * 256
    gan = GAN(trainer)
    gan.sample(256, batch_size=256)  # warm-up
    t0 = time.perf_counter()
    out = gan.sample(n, batch_size=256)
    rec["gan_sample_images_per_s"] = round(n / (time.perf_counter() - t0), 1)
    rec["shape"] = list(x.shape)
    set_checks(rec, finite=torch.isfinite(out).all(), on_device=x.device.type == dev.type)


def frechet_timing(ctx: Context, rec: dict[str, Any]) -> None:
    from bench_frechet import make_features  # benchmarks/, on sys.path as this script's folder

    s, dev = ctx.sizes, ctx.device
    real, fake = make_features(s.fid_n, s.fid_dim, seed=0)
    rec.update(n=s.fid_n, dim=s.fid_dim)
    t0 = time.perf_counter()
    mu1, sigma1 = feature_statistics(real)
    mu2, sigma2 = feature_statistics(fake)
    rec["statistics_cpu_s_per_set"] = round((time.perf_counter() - t0) / 2, 3)
    frechet_distance(mu1[:8], sigma1[:8, :8], mu2[:8], sigma2[:8, :8])  # warm-up
    times, value = [], math.nan
    for _ in range(3):
        t0 = time.perf_counter()
        value = frechet_distance(mu1, sigma1, mu2, sigma2)
        times.append(time.perf_counter() - t0)
    rec["distance_cpu_s_median"] = round(statistics.median(times), 3)
    rec["value"] = value
    set_checks(rec, value_finite=math.isfinite(value))
    # The same on the device (on a CPU dry run: the same code, CPU tensors). frechet_distance and
    # fid_from_features take device tensors and compute the distance on the CPU in float64.
    ctx.sync()
    t0 = time.perf_counter()
    mu1d, sigma1d = feature_statistics(real.to(dev))
    mu2d, sigma2d = feature_statistics(fake.to(dev))
    ctx.sync()
    rec["statistics_device_s_per_set"] = round((time.perf_counter() - t0) / 2, 3)
    rec["statistics_device"] = str(sigma1d.device)
    rec["device_vs_cpu_covariance_rel"] = rel(sigma1d.cpu(), sigma1)
    from_device_stats = frechet_distance(mu1d.cpu(), sigma1d.cpu(), mu2d.cpu(), sigma2d.cpu())
    rec["device_stats_value_rel"] = abs(from_device_stats - value) / abs(value)
    set_checks(rec, device_stats_agree=rec["device_stats_value_rel"] <= 1e-8)
    try:
        t0 = time.perf_counter()
        on_device = frechet_distance(mu1d, sigma1d, mu2d, sigma2d)
        rec["distance_from_device_tensors_s"] = round(time.perf_counter() - t0, 3)
        # the same numbers, moved to the CPU inside: the same value (up to BLAS threading)
        rec["device_tensors_vs_cpu_copies_rel"] = abs(on_device - from_device_stats) / abs(value)
        fid = fid_from_features(real.to(dev), fake.to(dev))
        rec["fid_from_device_features_rel"] = abs(fid - value) / abs(value)
        set_checks(
            rec,
            accepts_device_tensors=True,
            device_tensors_same_value=rec["device_tensors_vs_cpu_copies_rel"] <= 1e-12,
            fid_from_device_features_agrees=rec["fid_from_device_features_rel"] <= 1e-8,
        )
    except Exception as err:  # recorded as a failed check, and the run goes on
        rec["device_tensors_error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        set_checks(rec, accepts_device_tensors=False)


def section_sampling(ctx: Context, rec: dict[str, Any]) -> str:
    default_kernels()
    for model in ("dcgan", "stylegan"):
        with guarded(rec.setdefault(model, {}), ctx.report):
            sampling_rate(ctx, model, rec[model])
    with guarded(rec.setdefault("frechet", {}), ctx.report):
        frechet_timing(ctx, rec["frechet"])
    d, f = rec["dcgan"], rec["frechet"]
    return (
        f"dcgan G {d.get('g_forward_images_per_s', '-')} img/s, GAN.sample {d.get('gan_sample_images_per_s', '-')} "
        f"img/s; Fréchet {f.get('dim', '-')}-d {f.get('distance_cpu_s_median', '-')} s"
    )


# --------------------------------------------------------------------------- scale


def tf32_flags() -> dict[str, Any]:
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def profile_steps(ctx: Context, trainer: Trainer, n: int) -> dict[str, Any]:
    """torch.profiler over n train_steps: on CUDA the kernels' summed time (the GPU's busy time) and
    their number per step; CPU-side aten ops per step everywhere."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = ctx.device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        for _ in range(n):
            trainer.train_step()
        ctx.sync()
    events = prof.key_averages()
    out: dict[str, Any] = {
        "profiled_steps": n,
        "cpu_ops_per_step": round(sum(e.count for e in events if e.device_type == DeviceType.CPU) / n, 1),
    }
    if cuda:
        device = [e for e in events if e.device_type == DeviceType.CUDA]
        busy_us = sum(e.self_device_time_total for e in device) or sum(e.device_time_total for e in device)
        if not device:  # kernels not tagged as CUDA events: their time is still in self_device_time
            busy_us = sum(e.self_device_time_total for e in events)
        if busy_us > 0:
            out["gpu_kernels_per_step"] = round(sum(e.count for e in device) / n, 1) if device else None
            out["gpu_busy_ms_per_step"] = round(busy_us / 1e3 / n, 3)
        else:
            out["profile_note"] = "no GPU kernel time recorded (CUPTI unavailable?)"
    return out


def host_breakdown(ctx: Context, trainer: Trainer, n: int, n_profile: int) -> dict[str, Any]:
    """Where a train_step's time goes. pipelined: n steps back to back, one synchronize at the end
    (the it/s of the speed rows). host: time.perf_counter around train_step without synchronize,
    each call starting on an idle GPU (the previous step synchronised), so the time it takes
    Python to issue the step's kernels; synced: the same call plus torch.cuda.synchronize. When
    host is close to pipelined the GPU waits for the host (launch-bound); gpu_busy (the
    profiler's summed kernel time) says how much of a step the GPU is actually working."""
    ctx.sync()
    t0 = time.perf_counter()
    for _ in range(n):
        trainer.train_step()
    ctx.sync()
    pipelined = (time.perf_counter() - t0) / n
    host = synced = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        trainer.train_step()
        t1 = time.perf_counter()
        ctx.sync()
        host, synced = host + t1 - t0, synced + time.perf_counter() - t0
    out: dict[str, Any] = {
        "steps": n,
        "pipelined_ms_per_step": round(pipelined * 1e3, 3),
        "host_ms_per_step": round(host / n * 1e3, 3),
        "synced_ms_per_step": round(synced / n * 1e3, 3),
        "host_share": round(host / n / pipelined, 3),
    }
    try:
        out.update(profile_steps(ctx, trainer, n_profile))
    except Exception as err:  # the profiler (CUPTI) is a bonus: its failure is noted, not an error
        out["profile_failed"] = f"{type(err).__name__}: {str(err).strip()[:200]}"
    if "gpu_busy_ms_per_step" in out:
        out["gpu_busy_share"] = round(out["gpu_busy_ms_per_step"] / out["pipelined_ms_per_step"], 3)
    if ctx.device.type != "cuda":
        out["bound"], out["bound_note"] = "n/a", "no GPU: host and device are the same CPU"
    elif out["host_share"] >= 0.8:
        out["bound"], out["bound_note"] = "host", "launch-bound: the GPU waits for Python to issue kernels"
    else:
        out["bound"], out["bound_note"] = "gpu", "the host issues kernels faster than the GPU runs them"
    return out


def speed_row(ctx: Context, overrides: list[str], timed: int, host: bool = False) -> dict[str, Any]:
    """dcgan's train_step on digits: the first step (compiling, if on), warm-up, then timed it/s
    and images/s; optionally host_breakdown of the same trainer."""
    s, dev = ctx.sizes, ctx.device
    t0 = time.perf_counter()
    trainer = build_trainer("dcgan", "digits", overrides, dev)
    out: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 2)}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    first = trainer.train_step()
    ctx.sync()
    out["first_step_s"] = round(time.perf_counter() - t0, 3)
    for _ in range(s.scale_warmup):
        trainer.train_step()
    ctx.sync()
    t0 = time.perf_counter()
    last = first
    for _ in range(timed):
        last = trainer.train_step()
    ctx.sync()
    seconds = time.perf_counter() - t0
    t, net = trainer.cfg.train, trainer.cfg.net
    losses = [v for st in (first, last) for k, v in float_stats(st).items() if k.startswith("Loss")]
    out.update(
        batch_size=t.batch_size,
        channels=[getattr(net, "g_channels", None), getattr(net, "d_channels", None)],
        resolution=list(trainer.spec.shape[1:]),
        it_per_s=round(timed / seconds, 2),
        images_per_s=round(timed * t.batch_size / seconds, 1),
        ms_per_step=round(seconds / timed * 1e3, 3),
        timed_steps=timed,
        compiled={
            "G": trainer.G._compiled_call_impl is not None,
            "D": trainer.D._compiled_call_impl is not None,
        },
    )
    if dev.type == "cuda":
        out["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    set_checks(out, losses_finite=bool(losses) and all(map(math.isfinite, losses)))
    if host:
        out["host"] = host_breakdown(ctx, trainer, s.host_steps, s.profile_steps)
    return out


SCALE_ROWS = [("fp32", ["train.amp=off"]), ("bf16", ["train.amp=bf16"])]


def section_scale(ctx: Context, rec: dict[str, Any]) -> str:
    """Does AMP (and compile) pay where the GPU is not launch-bound? dcgan at the paper's widths
    (64 channels) and large batches, R1 off (so that compile covers D too, as in `compile`): fp32
    and bf16 at each batch of sizes.scale_batches (a larger batch only when its predicted cost is
    small and leaves the budget for compile), then compile + bf16 at the first batch if the budget
    allows. First, host_breakdown of the amp section's dcgan (batch 64, the recipe's 32 channels)
    and of the first big fp32 row: host (launch) time against GPU time."""
    from torch._dynamo.utils import counters

    s = ctx.sizes
    rec["kernels_before"] = default_kernels()
    rec["tf32"] = tf32_flags()
    small = rec.setdefault("dcgan_b64", {})
    with guarded(small, ctx.report):
        small.update(
            speed_row(ctx, [*speed_nets(ctx, "dcgan"), "train.batch_size=64"], s.scale_timed, host=True)
        )
    if "host" in small:
        h = small["host"]
        say(
            f"    dcgan b64 ch{small['channels'][0]}: {small['it_per_s']} it/s; host {h['host_ms_per_step']} ms, synced "
            f"{h['synced_ms_per_step']} ms, pipelined {h['pipelined_ms_per_step']} ms, GPU busy "
            f"{h.get('gpu_busy_ms_per_step', '-')} ms per step (bound: {h['bound']})"
        )
    nets = (
        []
        if s.tiny_speed_nets
        else [f"net.g_channels={s.scale_channels}", f"net.d_channels={s.scale_channels}"]
    )
    base = [*speed_nets(ctx, "dcgan"), *nets, "stab.r1_gamma=0"]
    rec["settings"] = base
    done: list[str] = []
    cost, prev = 0.0, 0
    for i, b in enumerate(s.scale_batches):
        sub = rec.setdefault(f"b{b}", {})
        if i:  # a larger batch only if cheap, and not at the cost of a compile that would still fit
            predicted = cost * b / prev
            keep = s.scale_compile_need if ctx.deadline.left() >= s.scale_compile_need else 5.0
            left = ctx.deadline.left() - predicted
            if predicted > s.scale_row_max_s or left < keep:
                sub["skipped"] = (
                    f"predicted {predicted:.0f} s (cheap: <= {s.scale_row_max_s:.0f} s) would leave {left:.0f} s "
                    f"of budget ({keep:.0f} s kept, for compile if it still fits)"
                )
                break
        t0 = time.perf_counter()
        for name, extra in SCALE_ROWS:
            row = sub.setdefault(name, {})
            with guarded(row, ctx.report):
                row.update(
                    speed_row(
                        ctx,
                        [*base, f"train.batch_size={b}", *extra],
                        s.scale_timed,
                        host=not i and name == "fp32",
                    )
                )
        cost, prev = time.perf_counter() - t0, b
        fp32, bf16 = sub["fp32"].get("images_per_s"), sub["bf16"].get("images_per_s")
        if fp32 and bf16:
            sub["bf16_speedup"] = round(bf16 / fp32, 3)
        done.append(f"b{b} fp32 {fp32} / bf16 {bf16} img/s")
        host = sub["fp32"].get("host", {})
        say(
            f"    dcgan b{b} ch{sub['fp32'].get('channels', ['?'])[0]}: fp32 {fp32} img/s, bf16 {bf16} img/s (x{sub.get('bf16_speedup', '-')})"
            + (
                f"; fp32 host {host['host_ms_per_step']} of {host['pipelined_ms_per_step']} ms/step"
                if host
                else ""
            )
        )
    b = s.scale_batches[0]
    row = rec.setdefault(f"b{b}", {}).setdefault("compile+bf16", {})
    if ctx.deadline.left() < s.scale_compile_need:
        row["skipped"] = f"time budget: {ctx.deadline.left():.0f} s left, {s.scale_compile_need:.0f} s wanted"
    else:
        torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)
        torch._dynamo.reset()
        counters.clear()
        with guarded(row, ctx.report):
            row.update(
                speed_row(
                    ctx,
                    [*base, f"train.batch_size={b}", "train.amp=bf16", "train.compile=true"],
                    s.scale_timed,
                )
            )
            set_checks(row, compile_active=row["compiled"]["G"])
            row["dynamo"] = {
                "unique_graphs": counters["stats"].get("unique_graphs", 0),
                "graph_breaks": sum(counters["graph_break"].values()),
            }
        fp32 = rec[f"b{b}"].get("fp32", {}).get("images_per_s")
        if fp32 and row.get("images_per_s"):
            row["speedup_vs_fp32"] = round(row["images_per_s"] / fp32, 3)
        say(
            f"    dcgan b{b} compile+bf16: {row.get('images_per_s', 'error')} img/s "
            f"(x{row.get('speedup_vs_fp32', '-')} vs fp32; first step {row.get('first_step_s', '-')} s)"
        )
        done.append(f"b{b} compile+bf16 {row.get('images_per_s', 'error')} img/s")
    return "; ".join(done)


# --------------------------------------------------------------------------- main


SECTION_FUNCTIONS: dict[str, Callable[[Context, dict[str, Any]], str]] = {
    "env": section_env,
    "families": section_families,
    "tabular": section_tabular,
    "tests": section_tests,
    "amp": section_amp,
    "sampling": section_sampling,
    "scale": section_scale,
    "compile": section_compile,
}


def run_section(ctx: Context, name: str) -> None:
    rec = ctx.report.data["sections"].setdefault(name, {})
    summary = ""
    with guarded(rec, ctx.report):
        summary = SECTION_FUNCTIONS[name](ctx, rec)
    passed, failed, errors = outcomes(rec)
    status = "error" if errors else "fail" if failed else "pass"
    ctx.report.data["summary"][name] = {
        "status": status,
        "passed": len(passed),
        "failed": failed,
        "errors": errors,
    }
    ctx.report.write()
    detail = f"; failed: {', '.join(failed[:6])}" if failed else ""
    detail += f"; errors: {' | '.join(errors[:3])}" if errors else ""
    n_checks = len(passed) + len(failed)
    say(f"[{name}] {status.upper()} {len(passed)}/{n_checks} checks, {rec['seconds']} s: {summary}{detail}")


def start_watchdog(ctx: Context, limit: float) -> None:
    """End the run `limit` seconds after it started, whatever is running (a compile that hangs):
    the report says so, and what was already recorded stays."""

    def stop() -> None:
        ctx.report.data["aborted"] = f"watchdog: the run passed {limit:.0f} s"
        ctx.report.write()
        if ctx.tests is not None and ctx.tests.poll() is None:
            ctx.tests.kill()
        say(f"[watchdog] stopped after {limit:.0f} s; partial results in {ctx.report.path}")
        shutil.rmtree(ctx.tmp, ignore_errors=True)  # os._exit skips the TemporaryDirectory's clean-up
        os._exit(3)

    timer = threading.Timer(limit, stop)
    timer.daemon = True
    timer.start()


def main() -> int:
    ap = argparse.ArgumentParser(
        description="ganforge on a GPU: families, resume, tabular, AMP, compile, sampling (module docstring)"
    )
    ap.add_argument("out", nargs="?", default=".", help="folder for cuda_check.json")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (a dry run)")
    ap.add_argument(
        "--quick", action="store_true", help="tiny step counts, sizes and speed networks (the CPU dry run)"
    )
    ap.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    ap.add_argument("--budget", type=float, default=None, help="seconds; default 240, or 170 with --quick")
    args = ap.parse_args()
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if "env" not in sections:  # always recorded: device, versions and TF32 flags (0.3 s)
        sections.insert(0, "env")
    budget = args.budget if args.budget is not None else (170.0 if args.quick else 240.0)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, args)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="cuda_check_") as tmp:
        ctx = Context(device, QUICK if args.quick else FULL, report, Deadline(budget), Path(tmp))
        report.data["sizes"] = asdict(ctx.sizes)
        start_watchdog(ctx, budget + WATCHDOG_GRACE)
        say(f"cuda_check: {device}, sections {','.join(sections)}, budget {budget:.0f} s -> {report.path}")
        if device.type == "cuda" and not torch.cuda.is_available():
            run_section(ctx, "env")
            say("no CUDA device: nothing more to check")
            return 0
        try:
            if "tests" in sections and device.type == "cuda":
                start_tests(ctx)  # in the background, overlapping env, families and tabular
            for name in sections:
                run_section(ctx, name)
        finally:
            if ctx.tests is not None and ctx.tests.poll() is None:
                ctx.tests.kill()
        report.data["seconds"] = round(ctx.deadline.elapsed(), 1)
        report.write()
        states = {name: s["status"] for name, s in report.data["summary"].items()}
        say(f"done in {report.data['seconds']} s: {json.dumps(states)}; {report.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
