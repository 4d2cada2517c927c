"""CUDA check: train, resume, sample and evaluate on a GPU, and time the DCGAN step there.

Run on a machine with CUDA (`python benchmarks/cuda_check.py OUT_DIR`); prints what it did and
writes OUT_DIR/cuda_check.json. On a CPU-only machine it says so and exits 0.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

import ganforge
from ganforge.evaluate import evaluate


def step_rate(gan_args: dict, steps: int = 200) -> float:
    """Training steps per second of the engine's train_step alone (after 20 warm-up steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        gan = ganforge.train(out=Path(tmp) / "r", steps=1, progress=False, device="cuda", **gan_args)
        trainer = gan.trainer
        trainer.cfg.train.steps = 10**9
        for _ in range(20):
            trainer.train_step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        torch.cuda.synchronize()
        return steps / (time.perf_counter() - t0)


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = {"overrides": ["train.log_every=10", "train.ckpt_every=20", "train.deterministic=true"],
                  "progress": False, "device": "cuda"}
        for model, data in (("mlp", "ring8"), ("dcgan", "digits")):
            full = ganforge.train(data=data, model=model, out=tmp / f"{model}-full", steps=40, **common)
            ganforge.train(data=data, model=model, out=tmp / f"{model}-split", steps=20, **common)
            split = ganforge.train(out=tmp / f"{model}-split", steps=40, resume=True, progress=False, device="cuda")
            same = all(torch.equal(a, b) for a, b in zip(full.trainer.G.parameters(), split.trainer.G.parameters()))
            close = all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full.trainer.G.parameters(), split.trainer.G.parameters()))
            x = ganforge.load(tmp / f"{model}-full", device="cuda").sample(16)
            metrics = evaluate(tmp / f"{model}-full", n=500, device="cuda")["metrics"]
            report[f"{model}/{data}"] = {"resume_bitwise": same, "resume_close": close, "sample_shape": list(x.shape),
                                         "params_device": str(next(full.trainer.G.parameters()).device),
                                         "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
            print(model, data, report[f"{model}/{data}"])
    report["dcgan_digits_it_per_s"] = step_rate({"data": "digits", "model": "dcgan"})
    report["dcgan64_digits_it_per_s"] = step_rate({"data": "digits", "model": "dcgan",
                                                   "overrides": ["net.g_channels=64", "net.d_channels=64"]})
    report["mlp_ring8_it_per_s"] = step_rate({"data": "ring8"})
    print({k: v for k, v in report.items() if k.endswith("per_s")})
    (out / "cuda_check.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
