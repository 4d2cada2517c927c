"""Evaluation during training: metrics every `eval.every` steps and the best checkpoint by one of them.

At the first logged step on or after each multiple of `eval.every` (and at the last step) the
callback samples `eval.n` points or images from the sampling generator (G_ema when kept), always
from the same noise, computes `eval.metrics` against the training data (real features are
computed once), adds them to that step's stats line as `Metrics/<name>`, appends the full result
to RUN/metrics.jsonl, and writes the whole training state to RUN/best.safetensors when `eval.best`
improved (lower FID/KID/reverse KL, higher modes/precision/recall/coverage/IS), as StyleGAN2-ADA's
metric snapshots do. Evaluation draws from its own random generators, so training is unchanged.

The callback must come before the run writer in the callback list: it adds its values to the
stats record that the writer then writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config
from ..data import Dataset
from ..evaluate import Evaluator, append_jsonl, best_metric, parse_metrics
from ..metrics.extractors import get_extractor
from .callbacks import Callback
from .checkpoint import META_KEY, save_checkpoint
from .run import RunFolder
from .trainer import resolve_device

if TYPE_CHECKING:
    from ..families import DataSpec
    from .trainer import Trainer

EVAL_SEED = 0  # the same noise at every evaluation: differences come from G, not from z


def read_best(path: Path) -> dict[str, Any] | None:
    """The {'metric', 'value', 'step'} record of an existing best checkpoint, or None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return json.loads((fh.metadata() or {})[META_KEY]).get("best")
    except (OSError, SafetensorError, KeyError, ValueError, AttributeError):  # unreadable: a new best
        return None


class EvalCallback(Callback):
    """Runs the evaluation metrics during training and keeps RUN/best.safetensors (module docstring)."""

    def __init__(self, folder: RunFolder, cfg: Config, spec: DataSpec, data: Dataset) -> None:
        e = cfg.eval
        self.folder = folder
        self.every = e.every
        self.best_path = folder.root / "best.safetensors"
        self.best_key, self.lower = best_metric(e.metrics, e.best)
        # Built now, so a missing weights file fails before the run folder is written.
        extractor = get_extractor(
            cfg.data.name,
            spec.kind,
            spec.shape,
            inception_weights=e.inception_weights or None,
            device=str(resolve_device(cfg.train.device)),
        )
        self.evaluator = Evaluator(data, extractor, parse_metrics(e.metrics), e.n, seed=EVAL_SEED)
        self.best: float | None = None
        self.next_due = e.every

    def on_train_start(self, trainer: Trainer) -> None:
        self.next_due = (trainer.step // self.every + 1) * self.every
        previous = read_best(self.best_path) if self.best_path.is_file() else None
        if previous and previous.get("metric") == self.best_key:  # a resumed run keeps its best
            self.best = float(previous["value"])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        last = trainer.step == trainer.cfg.train.steps
        if trainer.step < self.next_due and not last:
            return
        self.next_due = (trainer.step // self.every + 1) * self.every
        result = self.evaluator(trainer)
        values = result["metrics"]
        record.update({f"Metrics/{k}": v for k, v in values.items() if isinstance(v, (int, float))})
        append_jsonl(self.folder.root / "metrics.jsonl", {"run": str(self.folder.root), **result})
        value = values.get(self.best_key)
        if value is not None and self.improves(float(value)):
            self.best = float(value)
            tensors, meta = trainer.state()
            meta["best"] = {"metric": self.best_key, "value": self.best, "step": trainer.step}
            save_checkpoint(self.best_path, tensors, meta)

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.lower else value > self.best
