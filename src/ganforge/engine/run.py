"""The run folder: everything one `train` writes, and the callbacks that write it.

RUN/
  config.yaml              resolved config (what was actually trained)
  run.json                 ganforge/torch versions, data spec, dataset notes
  checkpoint.safetensors   full training state (safetensors + JSON metadata, no pickle)
  stats.jsonl              one JSON line per `log_every` steps
  samples/step_XXXXXX.png  grids (or scatters, for 2-D data) from one fixed noise batch
  plots/training.png       losses, D outputs and gradient norms at the end
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

from .. import __version__
from ..config import save_file
from ..report import plot_training, save_grid, save_points
from .callbacks import Callback
from .checkpoint import atomic_write, save_checkpoint

if TYPE_CHECKING:
    from .trainer import Trainer


class RunFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.info = self.root / "run.json"
        self.checkpoint = self.root / "checkpoint.safetensors"
        self.stats = self.root / "stats.jsonl"
        self.samples = self.root / "samples"
        self.plots = self.root / "plots"

    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()

    def is_empty(self) -> bool:
        return not self.root.exists() or not any(self.root.iterdir())

    def write_config(self, trainer: Trainer, notes: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config, lambda tmp: save_file(trainer.cfg, tmp))
        info = {
            "ganforge": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(trainer.device),
            "spec": trainer.spec.to_dict(),
            "data_notes": notes,
        }
        atomic_write(
            self.info, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2), encoding="utf-8")
        )

    def truncate_stats(self, step: int) -> None:
        """Drop stats lines past `step` (written after the last checkpoint of a killed run)."""
        if not self.stats.is_file():
            return
        keep = [
            line
            for line in self.stats.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        atomic_write(
            self.stats, lambda tmp: Path(tmp).write_text("".join(f"{ln}\n" for ln in keep), encoding="utf-8")
        )


class RunWriter(Callback):
    """Writes stats.jsonl, sample grids, checkpoints and the final plot into a RunFolder."""

    def __init__(self, folder: RunFolder, real_points: torch.Tensor | None = None) -> None:
        self.folder = folder
        self.real_points = real_points  # a subsample of the real 2-D data, drawn under the scatters
        self.fixed_z: torch.Tensor | None = None
        self.fixed_y: torch.Tensor | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        t = trainer.cfg.train
        gen = torch.Generator().manual_seed(t.seed + 3)  # CPU: the same grid noise on any device
        self.fixed_z = trainer.family.sample_z(t.n_grid, torch.device("cpu"), gen)
        if trainer.spec.n_classes and trainer.family.conditional:
            self.fixed_y = torch.arange(t.n_grid) % trainer.spec.n_classes
        self.folder.truncate_stats(trainer.step)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        with self.folder.stats.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_step_end(self, trainer: Trainer) -> None:
        t = trainer.cfg.train
        if t.sample_every and trainer.step % t.sample_every == 0:
            self.write_samples(trainer)
        if t.ckpt_every and trainer.step % t.ckpt_every == 0:
            self.write_checkpoint(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        self.write_samples(trainer)
        self.write_checkpoint(trainer)
        plot_training(
            self.folder.stats,
            self.folder.plots / "training.png",
            title=f"{trainer.cfg.model} / {trainer.cfg.loss.name} on {trainer.cfg.data.name}",
        )

    def write_samples(self, trainer: Trainer) -> Path:
        assert self.fixed_z is not None
        x = trainer.generate(self.fixed_z, self.fixed_y).float().cpu()
        path = self.folder.samples / f"step_{trainer.step:06d}.png"
        if trainer.spec.kind == "points":
            save_points(x, path, self.real_points, title=f"step {trainer.step}")
        else:
            save_grid((x + 1) / 2, path, nrow=max(1, round(math.sqrt(len(x)))))
        return path

    def write_checkpoint(self, trainer: Trainer) -> None:
        tensors, meta = trainer.state()
        save_checkpoint(self.folder.checkpoint, tensors, meta)


class Progress(Callback):
    """A one-line progress bar on a terminal (step, losses, rate, ETA); plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.t0 = 0.0
        self.step0 = 0

    def on_train_start(self, trainer: Trainer) -> None:
        self.t0, self.step0 = time.perf_counter(), trainer.step

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        total = trainer.cfg.train.steps
        rate = (trainer.step - self.step0) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (total - trainer.step) / rate if rate > 0 else float("inf")
        losses = "  ".join(
            f"{k.split('/', 1)[1]}={v:.3f}" for k, v in record.items() if k.startswith(("Loss/", "D/"))
        )
        text = f"step {trainer.step}/{total}  {losses}  {rate:.1f} it/s  ETA {format_seconds(eta)}"
        if self.interactive:
            width = 24
            done = int(width * trainer.step / total)
            self.stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {text}\033[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.interactive:
            self.stream.write("\n")
        self.stream.flush()


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, sec = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"
