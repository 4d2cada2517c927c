"""Evaluate a trained run: sample it, extract features, and compute the metrics that suit its data.

    >>> from ganforge.evaluate import evaluate
    >>> evaluate("runs/digits")["metrics"]["fid"]      # digits-FID of 10,000 samples vs the training set

Metric groups (`--metrics`), each a pure function of features in :mod:`ganforge.metrics`:

  fid    Fréchet distance between Gaussians fitted to real and fake features (Heusel et al. 2017)
  kid    kernel distance: unbiased MMD² with a cubic kernel, mean ± std over subsets (Bińkowski et al. 2018)
  pr     improved precision (fakes on the real manifold) and recall (reals on the fake manifold),
         k = 3 (Kynkäänniemi et al. 2019)
  dc     density and coverage, k = 5 (Naeem et al. 2020)
  is     Inception Score over the extractor's classes, 10 splits (Salimans et al. 2016)
  modes  Gaussian-mixture targets with known centres: modes captured, % high-quality samples
         (within 3 std), reverse KL of the mode histogram to uniform (Srivastava et al. 2017;
         Lin et al. 2018 - PacGAN, Sec. 5.1, whose protocol draws 2,500 samples)

A metric that does not fit the data is skipped with a reason (IS needs class probabilities, modes
needs known centres). Conditional runs whose data has a domain classifier also get the GAN-test
accuracy: how often the classifier recognises the class the generator was asked for, overall and
per class, and the histogram of recognised classes (Shmelkov et al. 2018, "How good is my GAN?").

Fake samples are generated, featurised and dropped batch by batch; only features are kept (and
only when a k-NN or kernel metric needs them). Real features are computed once per `Evaluator`,
so evaluation during training (:mod:`ganforge.engine.evaluation`) pays for them once.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import __version__
from .config import Config, DataConfig, SampleConfig
from .data import Dataset, load_dataset
from .engine.sampling import sample_batches
from .errors import ConfigError, DataError, GanforgeError, suggest
from .metrics import (
    StreamingStats,
    class_histogram_metrics,
    frechet_distance,
    gaussian_mixture_modes,
    inception_score,
    kernel_inception_distance,
    prdc,
)
from .metrics.extractors import Extractor, get_extractor

if TYPE_CHECKING:
    from .engine import Trainer
    from .families import DataSpec

METRICS: dict[str, str] = {
    "fid": "Fréchet distance of features (lower is better)",
    "kid": "kernel distance, unbiased MMD² (lower is better)",
    "pr": "precision and recall (higher is better)",
    "dc": "density and coverage (higher is better)",
    "is": "Inception Score over the extractor's classes (higher is better)",
    "modes": "modes captured, % high quality, reverse KL (Gaussian mixtures with known centres)",
}
# Values that can pick the best checkpoint: value -> (its metric group, lower is better).
BEST: dict[str, tuple[str, bool]] = {
    "fid": ("fid", True),
    "kid": ("kid", True),
    "rkl": ("modes", True),
    "modes": ("modes", False),
    "precision": ("pr", False),
    "recall": ("pr", False),
    "coverage": ("dc", False),
    "is": ("is", False),
}
PRIMARY = {"fid": "fid", "kid": "kid", "pr": "precision", "dc": "coverage", "is": "is", "modes": "rkl"}
TOY_N = 2_500  # samples for 2-D toy data (PacGAN protocol)
IMAGE_N = 10_000  # samples otherwise
MAX_REAL = 10_000  # real examples compared at most (a seeded subset of larger datasets)
K_PR, K_DC = 3, 5  # neighbourhood sizes of precision/recall and density/coverage


def parse_metrics(metrics: str | Sequence[str]) -> tuple[str, ...]:
    """'fid,kid' or ['fid', 'kid'] -> ('fid', 'kid'); an unknown name fails and lists the valid ones."""
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for name in (str(n).strip().lower() for n in names):
        if not name:
            continue
        if name not in METRICS:
            raise GanforgeError(
                f"unknown metric {name!r}{suggest(name, METRICS)}; choose from: {', '.join(METRICS)}"
            )
        if name not in out:
            out.append(name)
    if not out:
        raise GanforgeError(f"no metrics given; choose from: {', '.join(METRICS)}")
    return tuple(out)


def best_metric(metrics: str | Sequence[str], best: str = "") -> tuple[str, bool]:
    """(value name, lower is better) that picks the best checkpoint; '' = the first group's main value."""
    groups = parse_metrics(metrics)
    name = best.strip().lower() or PRIMARY[groups[0]]
    if name not in BEST:
        raise ConfigError(
            f"unknown best metric {name!r}{suggest(name, BEST)}; choose from: {', '.join(BEST)}"
        )
    group, lower = BEST[name]
    if group not in groups:
        raise ConfigError(f"best metric {name!r} needs {group!r} among the metrics ({', '.join(groups)})")
    return name, lower


# --------------------------------------------------------------------------- features


@dataclass
class FeatureSet:
    """What the metrics need from one set of samples, accumulated batch by batch."""

    stats: StreamingStats  # float64 mean and covariance of all features (FID)
    features: Tensor | None  # (N, D) float32, kept for KID, k-NN metrics and modes
    probs: Tensor | None  # (N, K) class probabilities, when the extractor is a classifier
    labels: Tensor | None = None  # (N,) classes asked of a conditional generator

    @property
    def n(self) -> int:
        return self.stats.n


def collect_features(
    extractor: Extractor,
    batches: Iterable[Tensor | tuple[Tensor, Tensor | None]],
    keep_features: bool = True,
) -> FeatureSet:
    """Run `extractor` over batches in data space (or (batch, labels) pairs); keep only features."""
    stats = StreamingStats()
    features: list[Tensor] = []
    probs: list[Tensor] = []
    labels: list[Tensor] = []
    for item in batches:
        x, y = item if isinstance(item, tuple) else (item, None)
        f, p = extractor(x)
        stats.update(f)
        if keep_features:
            features.append(f.float())
        if p is not None:
            probs.append(p.float())
        if y is not None:
            labels.append(y.cpu())
    if stats.n == 0:
        raise GanforgeError("no samples to evaluate")
    return FeatureSet(
        stats=stats,
        features=torch.cat(features) if features else None,
        probs=torch.cat(probs) if probs else None,
        labels=torch.cat(labels) if labels else None,
    )


def feature_set(features: Tensor, probs: Tensor | None = None) -> FeatureSet:
    """A FeatureSet of features already in memory (tests, precomputed features)."""
    return FeatureSet(StreamingStats().update(features), features.float(), probs)


# --------------------------------------------------------------------------- metrics


def _paired_subsets(real: Tensor, fake: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Equal-size seeded subsets: k-NN radii depend on the set size, so precision and recall compare
    sets of the same size, as in Kynkäänniemi et al. (2019)."""
    m = min(len(real), len(fake))
    gen = torch.Generator().manual_seed(seed)

    def pick(x: Tensor) -> Tensor:
        return x if len(x) == m else x[torch.randperm(len(x), generator=gen)[:m]]

    return pick(real), pick(fake)


def compute_metrics(
    real: FeatureSet,
    fake: FeatureSet,
    metrics: Sequence[str],
    seed: int = 0,
    centres: Tensor | None = None,
    mode_std: float | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """(values, skipped) of the metric groups `metrics` for fake against real features.

    `centres` (K, D) and `mode_std` describe a Gaussian-mixture target for the modes metrics; they
    apply only when the features are the points themselves (D equal). `skipped` maps a metric group
    to the reason it was not computed.
    """
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    manifold: dict[str, float] | None = None  # precision, recall, density, coverage
    for group in metrics:
        if group == "fid":
            if real.n < 2 or fake.n < 2:
                skipped[group] = "needs at least 2 real and 2 fake samples"
                continue
            values["fid"] = frechet_distance(real.stats.mean, real.stats.cov, fake.stats.mean, fake.stats.cov)
        elif group == "kid":
            if real.features is None or fake.features is None or min(real.n, fake.n) < 2:
                skipped[group] = "needs at least 2 real and 2 fake samples"
                continue
            values["kid"], values["kid_std"] = kernel_inception_distance(
                real.features, fake.features, n_subsets=100, subset_size=1000, seed=seed
            )
        elif group in ("pr", "dc"):
            if real.features is None or fake.features is None or min(real.n, fake.n) <= max(K_PR, K_DC):
                skipped[group] = f"needs more than {max(K_PR, K_DC)} real and fake samples"
                continue
            if manifold is None:  # one pass serves both groups
                manifold = prdc(*_paired_subsets(real.features, fake.features, seed), k_pr=K_PR, k_dc=K_DC)
            for key in ("precision", "recall") if group == "pr" else ("density", "coverage"):
                values[key] = manifold[key]
        elif group == "is":
            if fake.probs is None:
                skipped[group] = "the feature extractor has no class probabilities"
                continue
            values["is"], values["is_std"] = inception_score(fake.probs, n_splits=min(10, fake.n))
        elif group == "modes":
            if centres is None or mode_std is None:
                skipped[group] = "the data has no known mixture centres"
                continue
            if fake.features is None or fake.features.shape[1] != centres.shape[1]:
                skipped[group] = "needs the raw points (the 'points' extractor)"
                continue
            m = gaussian_mixture_modes(fake.features, centres, mode_std)
            values.update(
                modes=m["modes"], modes_total=int(centres.shape[0]), high_quality=100 * m["hq_fraction"]
            )
            values["rkl"] = m["reverse_kl"]
    return values, skipped


def class_metrics(probs: Tensor, labels: Tensor, n_classes: int) -> tuple[dict[str, float], dict[str, list]]:
    """GAN-test accuracy of a conditional generator (Shmelkov et al. 2018, Sec. 4.1): a classifier
    trained on real data labels samples generated for class c; accuracy = fraction recognised as c.

    Returns ({'accuracy', 'class_kl'}, {'accuracy': per class, 'histogram': fraction predicted per
    class}); class_kl is KL(predicted-class histogram || uniform) (Metz et al. 2017 protocol).
    """
    pred = probs.argmax(dim=1)  # (N,)
    labels = labels.long()
    right = (pred == labels).double()
    per_class = [
        float(right[labels == c].mean()) if (labels == c).any() else math.nan for c in range(n_classes)
    ]
    histogram = torch.bincount(pred, minlength=n_classes).double() / len(pred)
    return (
        {"accuracy": float(right.mean()), "class_kl": class_histogram_metrics(pred, n_classes)["kl"]},
        {"accuracy": per_class, "histogram": histogram.tolist()},
    )


# --------------------------------------------------------------------------- sampling


def to_data_space(x: Tensor, kind: str) -> Tensor:
    """Training tensors -> what samples look like to users: images [-1, 1] -> [0, 1]; points as they are."""
    return ((x.float() + 1) / 2).clamp_(0, 1) if kind == "image" else x.float()


def fake_batches(
    trainer: Trainer, n: int, seed: int, batch_size: int
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(samples in data space, labels or None) batch by batch: the same samples as GAN.sample(n, seed)."""
    y = torch.arange(n) % trainer.spec.n_classes if trainer.family.conditional else None
    for xb, yb in sample_batches(trainer, n, seed, batch_size, y):
        yield to_data_space(xb, trainer.spec.kind), yb


def real_batches(data: Dataset, idx: Tensor, batch_size: int) -> Iterator[Tensor]:
    for chunk in idx.split(batch_size):
        yield to_data_space(data.x[chunk.to(data.x.device)].cpu(), data.kind)


class Evaluator:
    """Evaluates generators against one real dataset with one extractor; real features once."""

    def __init__(
        self,
        real: Dataset,
        extractor: Extractor,
        metrics: Sequence[str],
        n: int,
        seed: int = 0,
        batch_size: int = 500,
    ) -> None:
        if n < 2:
            raise ConfigError(f"n must be at least 2 samples, got {n}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.real, self.extractor = real, extractor
        self.metrics, self.n, self.seed, self.batch_size = parse_metrics(metrics), n, seed, batch_size
        self._real_features: FeatureSet | None = None

    @property
    def keep_features(self) -> bool:
        return any(m in self.metrics for m in ("kid", "pr", "dc", "modes"))

    def real_features(self) -> FeatureSet:
        if self._real_features is None:
            n, gen = len(self.real), torch.Generator().manual_seed(self.seed)
            idx = (
                torch.randperm(n, generator=gen)[:MAX_REAL].sort().values if n > MAX_REAL else torch.arange(n)
            )
            batches = real_batches(self.real, idx, self.batch_size)
            self._real_features = collect_features(self.extractor, batches, self.keep_features)
        return self._real_features

    def __call__(self, trainer: Trainer) -> dict[str, Any]:
        """Metrics of `trainer`'s sampling generator (G_ema when kept) at its current step."""
        t0 = time.perf_counter()
        real = self.real_features()
        fake = collect_features(
            self.extractor, fake_batches(trainer, self.n, self.seed, self.batch_size), self.keep_features
        )
        values, skipped = compute_metrics(
            real, fake, self.metrics, self.seed, self.real.modes, self.real.mode_std
        )
        result: dict[str, Any] = {"step": trainer.step, "metrics": values}
        ext = self.extractor
        if trainer.family.conditional and fake.labels is not None:
            if ext.domain_classes and ext.domain_classes == trainer.spec.n_classes and fake.probs is not None:
                values_c, per_class = class_metrics(fake.probs, fake.labels, ext.domain_classes)
                values.update(values_c)
                result["per_class"] = per_class
            else:
                skipped["accuracy"] = f"no classifier for the classes of {self.real.name!r}"
        result.update(
            skipped=skipped,
            extractor=ext.name,
            **{k: ext.meta[k] for k in ("resize", "weights") if k in ext.meta},
            data=self.real.name,
            n=fake.n,
            n_real=real.n,
            seed=self.seed,
            jacobian_limit=trainer.cfg.sample.jacobian_limit,
            ganforge=__version__,
            seconds=round(time.perf_counter() - t0, 2),
            date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        )
        return result


# --------------------------------------------------------------------------- the public function


def real_dataset(cfg: Config, spec: DataSpec, against: str | None = None) -> Dataset:
    """The run's own training data (its saved data config), or `against` (a dataset name or path)
    at the run's image size; checked to be comparable with the run's samples."""
    data_cfg: DataConfig = cfg.data
    if against is not None:
        resolution = spec.shape[-1] if spec.kind == "image" else 0
        data_cfg = replace(cfg.data, name=str(against), resolution=resolution, limit=0)
    ds = load_dataset(data_cfg)
    # Images may differ in size (extractors resize), not in channels; vectors must match exactly.
    same = ds.shape[0] == spec.shape[0] if spec.kind == "image" else ds.shape == spec.shape
    if ds.kind != spec.kind or not same:
        raise DataError(
            f"cannot compare the run's samples ({spec.kind} {tuple(spec.shape)}) "
            f"with {data_cfg.name!r} ({ds.kind} {ds.shape})"
        )
    return ds


def default_n(kind: str) -> int:
    return TOY_N if kind == "points" else IMAGE_N


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def evaluate(
    run_dir: str | Path,
    metrics: str | Sequence[str] = tuple(METRICS),
    n: int | None = None,
    against: str | None = None,
    seed: int = 0,
    inception_weights: str | Path | None = None,
    batch_size: int = 500,
    extractor: str | None = None,
    resize: str = "legacy",
    device: str = "cpu",
    jacobian_limit: float | None = None,
) -> dict[str, Any]:
    """Evaluate the run in `run_dir`; the result is returned and appended to RUN/metrics.jsonl.

    `n` generated samples (default 10,000; 2,500 for 2-D toy data) are compared with the run's
    training data, or with `against` (a dataset name or path), through the extractor that suits
    the data (`extractor` overrides: digits, points, inception). Inception needs its weights file
    (`inception_weights` or $GANFORGE_INCEPTION_WEIGHTS); `resize` is its preprocessing: "legacy"
    (pytorch-fid) or "clean" (clean-fid). The result holds the metric values under "metrics",
    metrics that did not apply under "skipped", and how they were measured (extractor, resize,
    n, seed, checkpoint step, ganforge version). Samples are drawn as the run's `sample` section
    says; `jacobian_limit` overrides its Jacobian-based truncation (0 = the generator's raw samples).

    A tabular model folder (written by `ganforge tabular fit`) is compared with the table
    `against` (required: the folder does not record its training table) on encoded columns
    (:mod:`ganforge.metrics.tables`); see :func:`evaluate_table`.
    """
    from .api import load
    from .engine.run import RunFolder

    names = parse_metrics(metrics)
    if n is not None and n < 2:
        raise ConfigError(f"n must be at least 2 samples, got {n}")
    if is_tabular_folder(run_dir):
        return evaluate_table(Path(run_dir), names, n, against, seed, extractor, device)
    folder = RunFolder(run_dir)
    gan = load(folder.root, device=device)
    if jacobian_limit is not None:
        gan.trainer.cfg.sample = SampleConfig(jacobian_limit=jacobian_limit)
        gan.trainer.cfg.sample.validate()
    if inception_weights is not None and not Path(inception_weights).expanduser().is_file():
        raise ConfigError(f"--inception-weights {inception_weights}: no such file")  # even when unused
    real = real_dataset(gan.cfg, gan.spec, against)
    ext = get_extractor(
        gan.cfg.data.name, gan.spec.kind, gan.spec.shape, extractor, inception_weights, resize, device
    )
    evaluator = Evaluator(real, ext, names, n or default_n(gan.spec.kind), seed, batch_size)
    result = {"run": str(folder.root), **evaluator(gan.trainer)}
    append_jsonl(folder.root / "metrics.jsonl", result)
    return result


def is_tabular_folder(run_dir: str | Path) -> bool:
    from .tabular.model import INFO_FILE

    return (Path(run_dir) / INFO_FILE).is_file()


def evaluate_table(
    root: Path,
    metrics: Sequence[str],
    n: int | None,
    against: str | None,
    seed: int = 0,
    extractor: str | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate a tabular model folder (`ganforge tabular fit`) against the table `against`.

    Both tables are encoded by :class:`ganforge.metrics.tables.TableEncoder`, fitted on the
    reference rows (a seeded subset of at most 10,000); `n` generated rows (default: as many as
    the reference rows) are compared with them. The result is appended to ROOT/metrics.jsonl.
    """
    from .metrics.tables import TableEncoder
    from .tabular import TabularGAN, read_table

    if extractor not in (None, "table"):
        raise ConfigError(
            f"a tabular model is measured on its encoded columns (extractor 'table'), not {extractor!r}"
        )
    if against is None:
        raise ConfigError(
            f"{root} is a tabular model folder, which does not record its training table; "
            "pass --against TABLE (.csv, .tsv or .parquet), e.g. the table it was fitted on"
        )
    t0 = time.perf_counter()
    model = TabularGAN.load(root, device=device)
    real, _ = read_table(against, encoding=model.source.encoding)
    if len(real) > MAX_REAL:
        real = real.sample(MAX_REAL, random_state=seed).sort_index()
    n = n or max(len(real), 2)
    if model.transformer is None:  # load() always restores it
        raise GanforgeError(f"{root}: the tabular model has no fitted table encoding")
    encoder = TableEncoder(model.transformer.schema, real)
    if encoder.width == 0:
        raise DataError(f"{against}: nothing to compare, every column of the model is an id column")
    fake = model.sample(n, seed=seed)
    values, skipped = compute_metrics(feature_set(encoder(real)), feature_set(encoder(fake)), metrics, seed)
    result: dict[str, Any] = {
        "run": str(root),
        "step": model.trainer.step if model.trainer is not None else 0,
        "metrics": values,
        "skipped": skipped,
        "extractor": "table",
        "features": encoder.width,
        "data": str(against),
        "n": n,
        "n_real": len(real),
        "seed": seed,
        "ganforge": __version__,
        "seconds": round(time.perf_counter() - t0, 2),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    append_jsonl(root / "metrics.jsonl", result)
    return result


def format_result(result: dict[str, Any]) -> str:
    """A small aligned table of a result, for the terminal."""
    values = result["metrics"]
    rows = []
    for key, value in values.items():
        if key.endswith("_std") or key == "modes_total":
            continue
        if key == "modes" and "modes_total" in values:
            text = f"{value} / {values['modes_total']}"
        elif key == "high_quality":
            text = f"{value:.1f} %"
        elif isinstance(value, float):
            text = f"{value:.4g}"
            if f"{key}_std" in values:
                text += f" ± {values[f'{key}_std']:.2g}"
        else:
            text = str(value)
        rows.append((key, text))
    details = [f"{k} {result[k]}" for k in ("weights", "resize") if result.get(k)]
    if "features" in result:  # tables: the width of the encoded rows
        details.append(f"{result['features']} encoded columns")
    how = result["extractor"] + (f" ({', '.join(details)})" if details else "")
    lines = [
        f"run        {result.get('run', '')}  (step {result['step']})",
        f"compared   {result['n']} samples with {result['n_real']} of {result['data']!r}, seed {result['seed']}",
        *(
            [
                f"sampling   Jacobian truncation at {result['jacobian_limit']:g} x the median norm (--jacobian-limit 0: raw samples)"
            ]
            if result.get("jacobian_limit")
            else []
        ),
        f"features   {how}",
        "",
    ]
    width = max((len(k) for k, _ in rows), default=6)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    per_class = result.get("per_class", {})
    if per_class:  # GAN-test: accuracy per class asked for, and the share recognised as each class
        k, w = len(per_class["accuracy"]), max(width, *(len(key) for key in per_class))
        lines += ["", f"{'class':<{w}}  " + " ".join(f"{c:>5}" for c in range(k))]
        lines += [f"{key:<{w}}  " + " ".join(f"{v:5.2f}" for v in vals) for key, vals in per_class.items()]
    lines += [f"(skipped {k}: {why})" for k, why in result.get("skipped", {}).items()]
    lines.append(f"({result['seconds']:.1f} s)")
    return "\n".join(lines)
