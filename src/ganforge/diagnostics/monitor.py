"""The live training monitor: four classic GAN failure modes, each reported with a cure.

1. Mode collapse (Goodfellow 2016, NIPS tutorial Sec. 5.1.1; Metz et al. 2017; Lin et al. 2018):
   G maps many z to few outputs. Measured on one fixed noise batch as the diversity ratio
   mean_{i<j} ||G(z_i) - G(z_j)|| / mean_{i<j} ||x_i - x_j|| (1 for a G as spread as the data,
   0 for a G that ignores z) and, on mixtures with known centres (ring8, grid25), as the number of
   modes captured (`ganforge.metrics.modes.gaussian_mixture_modes`).
2. Non-convergence / oscillation (Mescheder et al. 2018, "Which training methods for GANs do
   actually converge?"): the losses swing with no trend while D alternately wins and is fooled.
3. Vanishing generator gradients (Arjovsky & Bottou 2017, Sec. 2.2): a near-perfect D saturates
   the minimax loss log(1 - D(G(z))), so ||grad_G|| -> 0.
4. Divergence: NaN/inf, or a loss blown up by orders of magnitude (too high a learning rate).

The detectors are pure functions over the trainer's logged records (already Python floats, so
watching costs no extra host synchronisation); only the diversity check runs G, on `n` samples
under inference mode. The :class:`Monitor` callback must come before the RunWriter so that the
`Diag/*` keys it adds to a record land in stats.jsonl.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch import Tensor

from ..config import Config, MonitorConfig
from ..engine.callbacks import Callback
from ..engine.checkpoint import atomic_write
from ..engine.run import Progress
from ..metrics.modes import gaussian_mixture_modes

if TYPE_CHECKING:
    from ..engine.trainer import Trainer

KINDS = ("divergence", "vanishing_gradients", "oscillation", "mode_collapse")
TITLES = {
    "divergence": "divergence",
    "vanishing_gradients": "vanishing generator gradients",
    "oscillation": "non-convergence (oscillation)",
    "mode_collapse": "mode collapse",
}
RECOVER_CHECKS = 3  # clean checks in a row before a kind counts as recovered (and may be reported again)
MIN_BEST_MODES = 4  # a drop in mode count is judged only once this many modes were captured


@dataclass
class Finding:
    step: int  # trainer step of the logged record that showed the problem
    kind: str  # one of KINDS
    message: str  # what was measured
    cure: str  # what to try, as config keys / flags

    def line(self) -> str:
        return f"ganforge monitor: step {self.step}: {TITLES.get(self.kind, self.kind)}: {self.message}. Try: {self.cure}"


# --- the detectors: pure functions over records (dicts of floats) ------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _std(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope per record of `values` against 0, 1, 2, ..."""
    n = len(values)
    if n < 2:
        return 0.0
    t_mean, v_mean = (n - 1) / 2, sum(values) / n
    num = sum((t - t_mean) * (v - v_mean) for t, v in enumerate(values))
    return num / sum((t - t_mean) ** 2 for t in range(n))


def check_divergence(record: dict[str, Any], loss_ref: dict[str, float], explode: float) -> str | None:
    """NaN/inf in any loss, D output or gradient norm; or |Loss/*| > explode x max(1, its reference)."""
    bad = [
        k
        for k, v in record.items()
        if k.startswith(("Loss/", "Grad/", "D/")) and isinstance(v, float) and not math.isfinite(v)
    ]
    if bad:
        return f"non-finite {', '.join(f'{k}={record[k]}' for k in sorted(bad))}"
    for key in ("Loss/D", "Loss/G"):
        value = record.get(key)
        if value is None:
            continue
        limit = explode * max(1.0, loss_ref.get(key, 1.0))
        if abs(value) > limit:
            return f"{key}={value:.3g} exploded (over {limit:.3g}, {explode:g}x its early size)"
    return None


def check_vanishing(
    record: dict[str, Any], grad_ref: float, probabilistic: bool, ratio: float, d_confident: float
) -> str | None:
    """Grad/G below `ratio` x its early median (or ~0), while D tells real from fake almost perfectly."""
    g = record.get("Grad/G")
    if g is None or not math.isfinite(grad_ref) or grad_ref <= 0:
        return None
    if not (g < ratio * grad_ref or g < 1e-8):
        return None
    detail = f"Grad/G={g:.2g}, {g / grad_ref:.1g}x its early median {grad_ref:.2g}"
    if probabilistic:
        real, fake = record.get("D/real"), record.get("D/fake")
        if real is None or fake is None or real - fake < d_confident:
            return None
        detail += f", while D is near-perfect (D/real={real:.3f}, D/fake={fake:.3f})"
    return detail


def check_oscillation(
    window: Sequence[dict[str, Any]],
    ref: dict[str, float],
    probabilistic: bool,
    cv: float,
    swing: float,
) -> str | None:
    """Loss/D and Loss/G fluctuating by >= `cv` of their size with no downward trend over the
    window, while D/real - D/fake swings over >= `swing` (probabilities) or >= `swing` x its
    typical size (critic losses). `ref` holds early typical |values| to size near-zero series."""
    if len(window) < 3 or any(k not in r for r in window for k in ("Loss/D", "Loss/G", "D/real", "D/fake")):
        return None
    parts = []
    for key in ("Loss/D", "Loss/G"):
        values = [r[key] for r in window]
        std = _std(values)
        size = max(_median([abs(v) for v in values]), ref.get(key, 0.0), 1e-8)
        decline = -_slope(values) * (len(values) - 1)
        if std < cv * size or decline > std:  # small fluctuations, or a real downward trend
            return None
        parts.append(f"{key} std {std / size:.2f} of its size")
    gaps = [r["D/real"] - r["D/fake"] for r in window]
    span = max(gaps) - min(gaps)
    if probabilistic:
        if span < swing:
            return None
        parts.append(f"D/real - D/fake swinging over {min(gaps):+.2f}..{max(gaps):+.2f}")
    else:
        size = max(_median([abs(g) for g in gaps]), ref.get("gap", 0.0), 1e-8)
        if span < swing * size:
            return None
        parts.append(f"D/real - D/fake swinging over {span / size:.1f}x its typical size")
    return f"over the last {len(window)} logs: " + ", ".join(parts) + ", with no downward trend"


def check_mode_collapse(
    diversity: float,
    modes: int | None,
    n_modes: int | None,
    best_modes: int,
    min_diversity: float,
    drop: float,
) -> str | None:
    """Diversity ratio under `min_diversity`, or the mode count fallen to <= `drop` x the best seen."""
    if math.isfinite(diversity) and diversity < min_diversity:
        msg = f"fixed-noise samples spread only {diversity:.2f}x as far apart as real data (< {min_diversity:g})"
        if modes is not None:
            msg += f"; {modes}/{n_modes} modes captured"
        return msg
    if modes is not None and best_modes >= MIN_BEST_MODES and modes <= drop * best_modes:
        return f"only {modes}/{n_modes} modes captured, down from {best_modes}"
    return None


def mean_pairwise_distance(x: Tensor) -> float:
    """mean_{i != j} ||x_i - x_j||_2 over the rows of x (N, ...) flattened; one host sync."""
    x = x.flatten(1).float()
    n = x.shape[0]
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


# --- cures, named as flags and config keys ----------------------------------------------------------


def cure(kind: str, cfg: Config) -> str:
    t, loss = cfg.train, cfg.loss.name
    lower_lr = (
        f"lower learning rates (now --set train.g_lr={t.g_lr:g} train.d_lr={t.d_lr:g}; try 2-10x lower)"
    )
    if kind == "divergence":
        cures = [lower_lr, "--set stab.spectral_norm=true", "--set stab.r1_gamma=10"]
        if loss != "wgan-gp":
            cures.append("--loss wgan-gp")
        cures.append("then restart, or resume from a checkpoint taken before it diverged")
    elif kind == "vanishing_gradients":
        cures = ["--loss ns (the non-saturating G loss)"] if loss == "minimax" else []
        cures += [
            f"weaken D: fewer D steps (now --set train.n_dis={t.n_dis}) or a lower train.d_lr than "
            f"train.g_lr (TTUR; now {t.d_lr:g} vs {t.g_lr:g})",
            "--set stab.spectral_norm=true",
            "--set stab.r1_gamma=10",
            "--set stab.diffaug=true (small image sets)",
        ]
        if loss != "wgan-gp":
            cures.append("--loss wgan-gp")
    elif kind == "oscillation":
        cures = [
            lower_lr,
            "TTUR: train.d_lr about 2-4x train.g_lr",
            "--set stab.spectral_norm=true",
            "--set stab.r1_gamma=10 (Mescheder 2018: makes training converge locally)",
        ]
        if loss != "wgan-gp":
            cures.append("--loss wgan-gp")
        if t.beta1 > 0.5:
            cures.append(f"--set train.beta1=0.5 (now {t.beta1:g})")
    elif kind == "mode_collapse":
        cures = [
            "--set stab.pac=2 (PacGAN)",
            "--set stab.mbstd=true (minibatch-stddev)",
            "--set stab.unrolled_steps=5 (unrolled GAN)",
        ]
        if loss != "wgan-gp":
            cures.append("--loss wgan-gp")
        if cfg.model != "mlp" or t.n_dis == 1:
            cures.append(f"more D steps (now --set train.n_dis={t.n_dis})")
        cures.append("--set stab.diffaug=true (small image sets)")
    else:
        raise ValueError(f"unknown finding kind {kind!r}; valid: {', '.join(KINDS)}")
    return "; ".join(cures)


# --- the callback --------------------------------------------------------------------------------------


class Monitor(Callback):
    """Watches the logged records and a fixed-noise sample batch; reports findings while training.

    Findings go to `monitor.findings`, to stderr (one line each; on a progress bar's own line),
    and, given a run folder `run_dir`, to RUN/diagnostics.jsonl; RUN/diagnostics.md gets the
    summary at the end. Place it before the RunWriter so `Diag/*` keys reach stats.jsonl.
    """

    def __init__(
        self,
        cfg: MonitorConfig | None = None,
        run_dir: str | Path | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.cfg = cfg or MonitorConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.stream = stream
        self.findings: list[Finding] = []
        self.active: dict[str, int] = {}  # kind -> clean checks in a row since it was reported
        self.early: dict[str, list[float]] = {"Loss/D": [], "Loss/G": [], "Grad/G": [], "gap": []}
        self.window: deque[dict[str, Any]] = deque(maxlen=self.cfg.window)
        self.best_modes = 0
        self.last_check = -1
        self.last: dict[str, float] = {}  # the latest Diag/* values
        self.z: Tensor | None = None
        self.y: Tensor | None = None
        self.real_distance = math.nan
        self.steps = 0
        self._out: TextIO | None = None
        self._tty = False

    @property
    def jsonl(self) -> Path | None:
        return self.run_dir / "diagnostics.jsonl" if self.run_dir is not None else None

    # --- hooks ---------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer) -> None:
        progress = next((cb for cb in trainer.callbacks if isinstance(cb, Progress)), None)
        self._out = self.stream or (progress.stream if progress else sys.stderr)
        self._tty = bool(progress and progress.interactive and progress.stream is self._out)
        self._load_previous(trainer.step)
        if trainer.data is None:
            return
        t = trainer.cfg.train
        gen = torch.Generator().manual_seed(t.seed + 4)  # CPU: the same check noise on any device
        n = min(self.cfg.n, len(trainer.data.x))
        self.z = trainer.family.sample_z(n, torch.device("cpu"), gen)
        if trainer.family.conditional and trainer.spec.n_classes:
            self.y = torch.arange(n) % trainer.spec.n_classes
        idx = torch.randperm(len(trainer.data.x), generator=gen)[:n]
        with torch.inference_mode():
            self.real_distance = mean_pairwise_distance(trainer.data.x[idx.to(trainer.data.x.device)])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        step = int(record.get("step", trainer.step))
        self.steps = step
        probabilistic = trainer.family.loss.probabilistic
        c = self.cfg
        self._remember_early(record, step)
        self.window.append(record)
        ref = {k: _median([abs(v) for v in vs]) for k, vs in self.early.items() if vs}

        loss_ref = {k: min(abs(v) for v in self.early[k]) for k in ("Loss/D", "Loss/G") if self.early[k]}
        diverged = check_divergence(record, loss_ref, c.explode)
        self._judge(trainer, step, "divergence", diverged)
        if diverged is not None:
            self.window.clear()  # a NaN would poison the windows that follow
            return

        if len(self.window) == self.window.maxlen:
            self._judge(
                trainer,
                step,
                "oscillation",
                check_oscillation(list(self.window), ref, probabilistic, c.osc_cv, c.osc_swing),
            )
        if step > c.warmup:
            grad_ref = ref.get("Grad/G", math.nan)
            self._judge(
                trainer,
                step,
                "vanishing_gradients",
                check_vanishing(record, grad_ref, probabilistic, c.vanish_ratio, c.d_confident),
            )
        if self.z is not None and (not c.check_every or step - self.last_check >= c.check_every):
            self.last_check = step
            self._check_samples(trainer, step, record)

    def on_train_end(self, trainer: Trainer) -> None:
        self.steps = trainer.step
        if self.run_dir is not None:
            text = self.summary()
            atomic_write(
                self.run_dir / "diagnostics.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8")
            )

    # --- internals ---------------------------------------------------------------------------------

    def _remember_early(self, record: dict[str, Any], step: int) -> None:
        """Keep the reference values of the warm-up (at least the first record)."""
        if step > self.cfg.warmup and self.early["Loss/D"]:
            return
        values = {k: record.get(k) for k in ("Loss/D", "Loss/G", "Grad/G")}
        if "D/real" in record and "D/fake" in record:
            values["gap"] = record["D/real"] - record["D/fake"]
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.early[key].append(value)

    def _check_samples(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        """Generate the fixed batch; diversity ratio and mode count into the record; judge collapse."""
        assert self.z is not None and trainer.data is not None
        with torch.inference_mode():
            x = trainer.generate(self.z, self.y)
            diversity = mean_pairwise_distance(x) / self.real_distance
        record["Diag/diversity"] = self.last["Diag/diversity"] = diversity
        modes, n_modes = None, None
        if trainer.data.modes is not None and trainer.data.mode_std is not None and math.isfinite(diversity):
            n_modes = len(trainer.data.modes)
            modes = int(
                gaussian_mixture_modes(
                    x.float().cpu().flatten(1), trainer.data.modes.cpu(), trainer.data.mode_std
                )["modes"]
            )
            record["Diag/modes"] = self.last["Diag/modes"] = modes
            self.last["n_modes"] = n_modes
        if step > self.cfg.warmup:
            found = check_mode_collapse(
                diversity, modes, n_modes, self.best_modes, self.cfg.min_diversity, self.cfg.mode_drop
            )
            self._judge(trainer, step, "mode_collapse", found)
        if modes is not None:
            self.best_modes = max(self.best_modes, modes)

    def _judge(self, trainer: Trainer, step: int, kind: str, message: str | None) -> None:
        """Report `kind` once; report it again only after RECOVER_CHECKS clean checks in a row."""
        if message is None:
            if kind in self.active:
                self.active[kind] += 1
                if self.active[kind] >= RECOVER_CHECKS:
                    del self.active[kind]
            return
        reported = kind in self.active
        self.active[kind] = 0
        if not reported:
            self._report(Finding(step, kind, message, cure(kind, trainer.cfg)))

    def _report(self, finding: Finding) -> None:
        self.findings.append(finding)
        if self._out is not None:
            self._out.write(("\n" if self._tty else "") + finding.line() + "\n")
            self._out.flush()
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(finding)) + "\n")

    def _load_previous(self, step: int) -> None:
        """On resume, keep the findings up to the checkpoint's step (drop those of lost steps)."""
        self.findings = []
        path = self.jsonl
        if path is None or not path.is_file():
            return
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        self.findings = [f for f in (Finding(**json.loads(ln)) for ln in lines) if f.step <= step]
        text = "".join(json.dumps(asdict(f)) + "\n" for f in self.findings)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def summary(self) -> str:
        """Markdown for the run report: 'no problems detected', or each finding with its cure."""
        lines = ["# Training diagnostics", ""]
        last = ""
        if "Diag/diversity" in self.last:
            last = f"last check: sample diversity {self.last['Diag/diversity']:.2f}x the real data's"
            if "Diag/modes" in self.last:
                last += f", {int(self.last['Diag/modes'])}/{int(self.last['n_modes'])} modes captured"
        if not self.findings:
            lines.append(f"No problems detected in {self.steps} steps" + (f" ({last})." if last else "."))
            return "\n".join(lines) + "\n"
        n = len(self.findings)
        lines += [
            f"{n} problem{'s' if n > 1 else ''} detected in {self.steps} steps"
            + (f" ({last})." if last else "."),
            "",
        ]
        for f in self.findings:
            lines += [
                f"- **{TITLES.get(f.kind, f.kind)}** at step {f.step}: {f.message}.",
                f"  - Try: {f.cure}.",
            ]
        return "\n".join(lines) + "\n"
