"""The live training monitor: four classic GAN failure modes, each reported with a cure.

1. Mode collapse (Goodfellow 2016, NIPS tutorial Sec. 5.1.1; Lin et al. 2018, PacGAN): G maps
   many z to few outputs. Measured on one fixed noise batch as the diversity ratio
   mean_{i!=j} ||G(z_i) - G(z_j)|| / mean_{i!=j} ||x_i - x_j|| (about 1 for a G as spread as the
   data, 0 for a G that ignores z) and, on mixtures with known centres (ring8, grid25), as the
   number of modes captured (`ganforge.metrics.modes.gaussian_mixture_modes`).
2. Non-convergence / oscillation (Mescheder et al. 2018, "Which training methods for GANs do
   actually converge?"): losses swing with no trend while D alternately wins and is fooled.
3. Vanishing generator gradients (Arjovsky & Bottou 2017, Sec. 2.2): a near-perfect D saturates
   the minimax loss log(1 - D(G(z))), so ||grad_G L_G|| -> 0.
4. Divergence: NaN/inf, or a loss blown up by orders of magnitude (too high a learning rate).

The detectors are pure functions of the trainer's logged records (already Python floats, so
watching adds no host synchronisation); only the diversity check runs G, on `monitor.n` samples
under inference mode. The thresholds (`MonitorConfig`) were calibrated on healthy runs (ring8,
grid25, moons, spiral, digits; every loss), which stay clear of them (see tests/test_diagnostics.py).
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

TITLES = {
    "divergence": "divergence",
    "vanishing_gradients": "vanishing generator gradients",
    "oscillation": "non-convergence (oscillation)",
    "mode_collapse": "mode collapse",
}
KINDS = tuple(TITLES)
RECOVER_CHECKS = 3  # clean checks in a row before a kind counts as recovered (and may be reported again)
COLLAPSE_CHECKS = 2  # failed diversity checks in a row before collapse is reported (early dips recover)
MIN_BEST_MODES = 4  # a fall in mode count is judged once this many modes were captured ...
MIN_HQ = 0.25  # ... by a batch this much near the centres (early, smeared samples hit modes by chance)


@dataclass
class Finding:
    step: int  # step of the logged record that showed the problem
    kind: str  # one of KINDS
    message: str  # what was measured
    cure: str  # what to try, as flags and config keys

    def line(self) -> str:
        return f"ganforge monitor: step {self.step}: {TITLES[self.kind]}: {self.message}. Try: {self.cure}"


# --- the detectors: pure functions of records (dicts of floats) -------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope of `values` against 0, 1, 2, ... (per record)."""
    n = len(values)
    t_mean, v_mean = (n - 1) / 2, sum(values) / n
    num = sum((t - t_mean) * (v - v_mean) for t, v in enumerate(values))
    return num / max(sum((t - t_mean) ** 2 for t in range(n)), 1e-12)


def check_divergence(record: dict[str, Any], loss_ref: dict[str, float], explode: float) -> str | None:
    """NaN/inf in a loss, D output or gradient norm; or |Loss/D|, |Loss/G| > explode x max(1, ref)."""
    bad = sorted(
        k
        for k, v in record.items()
        if k.startswith(("Loss/", "Grad/", "D/")) and isinstance(v, float) and not math.isfinite(v)
    )
    if bad:
        return "non-finite " + ", ".join(f"{k}={record[k]}" for k in bad)
    for key in ("Loss/D", "Loss/G"):
        value = record.get(key)
        limit = explode * max(1.0, loss_ref.get(key, 1.0))
        if value is not None and abs(value) > limit:
            return f"{key}={value:.3g} exploded (|{key}| > {limit:.3g})"
    return None


def check_vanishing(
    record: dict[str, Any], grad_ref: float, probabilistic: bool, ratio: float, d_confident: float
) -> str | None:
    """Grad/G under `ratio` x `grad_ref` (its largest early value) or ~0, while D is near-perfect:
    D/real - D/fake >= `d_confident` (logit losses; critics have no probability to judge)."""
    g = record.get("Grad/G")
    if g is None or not (grad_ref > 0) or not (g < ratio * grad_ref or g < 1e-8):
        return None
    detail = f"Grad/G={g:.2g}, {g / grad_ref:.1g}x its early level {grad_ref:.2g}"
    if probabilistic:
        real, fake = record.get("D/real"), record.get("D/fake")
        if real is None or fake is None or real - fake < d_confident:
            return None
        detail += f", while D is near-perfect (D/real={real:.3f}, D/fake={fake:.3g})"
    return detail


def check_oscillation(
    window: Sequence[dict[str, Any]], ref: dict[str, float], probabilistic: bool, cv: float, swing: float
) -> str | None:
    """Loss/D and Loss/G both fluctuate by >= `cv` of their size with no downward trend over the
    window, while D/real - D/fake spans >= `swing` (probabilities; for critics, `swing` x the
    typical |D/real| + |D/fake|). `ref` holds early sizes, so series near zero are not blown up."""
    keys = ("Loss/D", "Loss/G", "D/real", "D/fake")
    if len(window) < 3 or any(k not in r for r in window for k in keys):
        return None
    parts = []
    for key in ("Loss/D", "Loss/G"):
        values = [r[key] for r in window]
        std = statistics.pstdev(values)
        size = max(_median([abs(v) for v in values]), ref.get(key, 0.0), 1e-8)
        decline = -_slope(values) * (len(values) - 1)  # fall over the window along the fitted trend
        if std < cv * size or decline > std:
            return None
        parts.append(f"{key} std {std / size:.2f}x its size")
    gaps = [r["D/real"] - r["D/fake"] for r in window]
    span = max(gaps) - min(gaps)
    if probabilistic:
        if span < swing:
            return None
        parts.append(f"D/real - D/fake swinging over {min(gaps):+.2f}..{max(gaps):+.2f}")
    else:
        size = max(_median([abs(r["D/real"]) + abs(r["D/fake"]) for r in window]), ref.get("D", 0.0), 1e-8)
        if span < swing * size:
            return None
        parts.append(f"D/real - D/fake swinging over {span / size:.1f}x the size of D's outputs")
    return f"over the last {len(window)} logs {', '.join(parts)}, with no downward trend"


def check_mode_collapse(
    diversity: float,
    modes: int | None,
    n_modes: int | None,
    hq: float,
    best_modes: int,
    min_diversity: float,
    drop: float,
) -> str | None:
    """Diversity ratio under `min_diversity`; or, with known modes, the mode count fallen to
    <= `drop` x `best_modes` (the best seen, counted like this one with hq fraction >= MIN_HQ)."""
    if diversity < min_diversity:
        msg = f"fixed-noise samples spread only {diversity:.2f}x as far apart as real data (< {min_diversity:g})"
        return msg + (f"; {modes}/{n_modes} modes captured" if modes is not None else "")
    if modes is not None and hq >= MIN_HQ and best_modes >= MIN_BEST_MODES and modes <= drop * best_modes:
        return f"only {modes}/{n_modes} modes captured, down from {best_modes}"
    return None


def mean_pairwise_distance(x: Tensor) -> float:
    """mean_{i != j} ||x_i - x_j||_2 over the rows of x (N, ...) flattened; one host sync."""
    x = x.flatten(1).float()  # (N, D)
    n = x.shape[0]
    return float(torch.cdist(x, x).sum() / (n * (n - 1)))


# --- cures, named as flags and config keys ---------------------------------------------------------


STAB_CURES = {  # config key -> (the flag that turns it on, is it on already?)
    "spectral_norm": ("--set stab.spectral_norm=true", bool),
    # gamma 1 was the best stabiliser on stacked digits (benchmarks/stacked_digits.py); R1 carries
    # squared data units, so points get the toy recipe's 0.02 x variance instead (see cure()).
    "r1_gamma": ("--set stab.r1_gamma=1", lambda v: v > 0),
    "instance_noise": ("--set stab.instance_noise=0.1", lambda v: v > 0),
    "pac": ("--set stab.pac=2 (PacGAN)", lambda v: v > 1),
    "mbstd": ("--set stab.mbstd=true (minibatch-stddev)", bool),
    "unrolled_steps": ("--set stab.unrolled_steps=2 (unrolled GAN)", lambda v: v > 0),
    "diffaug": ("--set stab.diffaug=color,translation,cutout (DiffAugment)", bool),
}


def cure(kind: str, cfg: Config, images: bool = True) -> str:
    """What to try for a finding of `kind`, as flags and config keys, leaving out what is already on."""
    t, loss = cfg.train, cfg.loss.name
    stab = getattr(cfg, "stab", None)

    def flags(*keys: str) -> list[str]:
        out = []
        for key in keys:
            flag, is_on = STAB_CURES[key]
            if not (stab is not None and is_on(getattr(stab, key))) and (key != "diffaug" or images):
                if key == "r1_gamma" and not images:
                    flag = "--set stab.r1_gamma=G with G about 0.02 x the data's per-dimension variance (R1)"
                out.append(flag)
        return out

    lower_lr = (
        f"lower learning rates (now --set train.g_lr={t.g_lr:g} --set train.d_lr={t.d_lr:g}; try 2-10x lower)"
    )
    wgan_gp = [] if loss == "wgan-gp" else ["--loss wgan-gp"]
    if kind == "divergence":
        cures = [lower_lr, *flags("spectral_norm", "r1_gamma"), *wgan_gp]
        cures.append("then restart, or resume from a checkpoint taken before it diverged")
    elif kind == "vanishing_gradients":
        cures = ["--loss ns instead of minimax (non-saturating G loss)"] if loss == "minimax" else []
        cures += [
            f"weaken D: fewer D steps (now --set train.n_dis={t.n_dis}) or train.d_lr below train.g_lr "
            f"(now {t.d_lr:g} vs {t.g_lr:g})",
            *flags("spectral_norm", "r1_gamma", "instance_noise", "diffaug"),
            *wgan_gp,
        ]
    elif kind == "oscillation":
        cures = [
            lower_lr,
            "TTUR (train.d_lr about 2-4x train.g_lr)",
            *flags("spectral_norm", "r1_gamma"),
            *wgan_gp,
        ]
        if t.beta1 > 0.5:
            cures.append(f"--set train.beta1=0.5 (now {t.beta1:g})")
    elif kind == "mode_collapse":
        cures = [*flags("r1_gamma", "pac", "mbstd", "unrolled_steps"), *wgan_gp, *flags("diffaug")]
    else:
        raise ValueError(f"unknown finding kind {kind!r}; valid: {', '.join(KINDS)}")
    return "; ".join(cures) or "see the stabilisers in the stab config section"


# --- the callback ------------------------------------------------------------------------------------


class Monitor(Callback):
    """Watches logged records and a fixed-noise batch; reports findings while training.

    Findings go to `monitor.findings`, to stderr as one line each (below the progress bar on a
    terminal), and, given a run folder `run_dir`, to RUN/diagnostics.jsonl; `summary()` is written
    to RUN/diagnostics.md at the end. It adds `Diag/diversity` (and `Diag/modes` where the data
    has known modes) to the records it checks, so it must come before the RunWriter.
    """

    def __init__(
        self,
        cfg: MonitorConfig | None = None,
        run_dir: str | Path | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.cfg = cfg or MonitorConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.stream = stream  # default: the Progress display's stream, else stderr
        self.findings: list[Finding] = []
        self.active: dict[str, int] = {}  # reported kind -> clean checks in a row since
        self.streak: dict[str, int] = {}  # kind -> failed checks in a row
        self.early: dict[str, list[float]] = {"Loss/D": [], "Loss/G": [], "Grad/G": [], "D": []}
        self.window: deque[dict[str, Any]] = deque(maxlen=self.cfg.window)
        self.best_modes = 0
        self.last_check = -1
        self.last: dict[str, float] = {}  # latest Diag/* values, for the summary
        self.z: Tensor | None = None
        self.y: Tensor | None = None
        self.real_distance = math.nan
        self.steps = 0
        self._out: TextIO | None = None
        self._tty = False

    @property
    def jsonl(self) -> Path | None:
        return self.run_dir / "diagnostics.jsonl" if self.run_dir is not None else None

    # --- hooks ----------------------------------------------------------------------------------

    def on_train_start(self, trainer: Trainer) -> None:
        progress = next((cb for cb in trainer.callbacks if isinstance(cb, Progress)), None)
        self._out = self.stream or (progress.stream if progress else sys.stderr)
        self._tty = bool(progress and progress.interactive and progress.stream is self._out)
        self.steps = trainer.step
        self._load_previous(trainer.step)
        if trainer.data is None:
            return
        gen = torch.Generator().manual_seed(trainer.cfg.train.seed + 4)  # CPU: same noise on any device
        x = trainer.data.x
        n = min(self.cfg.n, len(x))
        self.z = trainer.family.sample_z(n, torch.device("cpu"), gen)
        if trainer.family.conditional and trainer.spec.n_classes:
            self.y = torch.arange(n) % trainer.spec.n_classes
        idx = torch.randperm(len(x), generator=gen)[:n]
        self.real_distance = mean_pairwise_distance(x[idx.to(x.device)])

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        c = self.cfg
        step = self.steps = int(record.get("step", trainer.step))
        probabilistic = trainer.family.loss.probabilistic
        # Losses start O(1) (data in [-1, 1] or similar, fresh networks), so the first record is
        # judged against 1; later ones against the smallest size seen in the warm-up.
        loss_ref = {k: min(abs(v) for v in self.early[k]) for k in ("Loss/D", "Loss/G") if self.early[k]}
        diverged = check_divergence(record, loss_ref, c.explode)
        self._judge(trainer, step, "divergence", diverged)
        if diverged is not None:
            self.window.clear()  # a NaN would poison the windows that follow
            return
        self._remember_early(record, step)
        self.window.append(record)
        if len(self.window) == self.window.maxlen:
            ref = {k: _median([abs(v) for v in vs]) for k, vs in self.early.items() if vs}
            found = check_oscillation(self.window, ref, probabilistic, c.osc_cv, c.osc_swing)
            self._judge(trainer, step, "oscillation", found)
        if step > c.warmup and self.early["Grad/G"]:
            grad_ref = max(self.early["Grad/G"])
            found = check_vanishing(record, grad_ref, probabilistic, c.vanish_ratio, c.d_confident)
            self._judge(trainer, step, "vanishing_gradients", found)
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

    # --- internals --------------------------------------------------------------------------------

    def _remember_early(self, record: dict[str, Any], step: int) -> None:
        """Keep the warm-up's values (at least the first record's) as references."""
        if step > self.cfg.warmup and self.early["Loss/D"]:
            return
        values = {k: record.get(k) for k in ("Loss/D", "Loss/G", "Grad/G")}
        if "D/real" in record and "D/fake" in record:
            values["D"] = abs(record["D/real"]) + abs(record["D/fake"])
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self.early[key].append(value)

    def _check_samples(self, trainer: Trainer, step: int, record: dict[str, Any]) -> None:
        """Generate the fixed batch; diversity ratio and mode count into the record; judge collapse."""
        assert self.z is not None and trainer.data is not None
        data, c = trainer.data, self.cfg
        with torch.inference_mode():
            x = trainer.generate(self.z, self.y)
            diversity = mean_pairwise_distance(x) / self.real_distance
        if not math.isfinite(diversity):
            return
        record["Diag/diversity"] = self.last["Diag/diversity"] = diversity
        modes, n_modes, hq = None, None, 0.0
        if data.modes is not None and data.mode_std is not None:
            m = gaussian_mixture_modes(x.float().cpu().flatten(1), data.modes.cpu(), data.mode_std)
            modes, n_modes, hq = int(m["modes"]), len(data.modes), m["hq_fraction"]
            record["Diag/modes"] = self.last["Diag/modes"] = modes
            self.last["n_modes"] = n_modes
        if step > c.warmup:
            found = check_mode_collapse(
                diversity, modes, n_modes, hq, self.best_modes, c.min_diversity, c.mode_drop
            )
            self._judge(trainer, step, "mode_collapse", found, patience=COLLAPSE_CHECKS)
        if modes is not None and hq >= MIN_HQ:
            self.best_modes = max(self.best_modes, modes)

    def _judge(self, trainer: Trainer, step: int, kind: str, message: str | None, patience: int = 1) -> None:
        """Report `kind` after `patience` failed checks in a row; once reported, again only after
        it has recovered (RECOVER_CHECKS clean checks in a row)."""
        if message is None:
            self.streak[kind] = 0
            if kind in self.active:
                self.active[kind] += 1
                if self.active[kind] >= RECOVER_CHECKS:
                    del self.active[kind]
            return
        self.streak[kind] = self.streak.get(kind, 0) + 1
        if kind in self.active:
            self.active[kind] = 0
        elif self.streak[kind] >= patience:
            self.active[kind] = 0
            self._report(Finding(step, kind, message, cure(kind, trainer.cfg, trainer.spec.kind == "image")))

    def _report(self, finding: Finding) -> None:
        self.findings.append(finding)
        if self._out is not None:
            self._out.write(("\n" if self._tty else "") + finding.line() + "\n")  # below the progress bar
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
        last = ""
        if "Diag/diversity" in self.last:
            last = f" (last check: sample diversity {self.last['Diag/diversity']:.2f}x the real data's"
            if "Diag/modes" in self.last:
                last += f", {int(self.last['Diag/modes'])}/{int(self.last['n_modes'])} modes captured"
            last += ")"
        n = len(self.findings)
        head = f"{n} problem{'s' if n > 1 else ''} detected" if n else "No problems detected"
        lines = ["# Training diagnostics", "", f"{head} in {self.steps} steps{last}."]
        if n:
            lines.append("")
        for f in self.findings:
            lines += [f"- **{TITLES[f.kind]}** at step {f.step}: {f.message}.", f"  - Try: {f.cure}."]
        return "\n".join(lines) + "\n"
