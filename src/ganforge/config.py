"""Typed configuration: dataclasses filled from defaults, a YAML/JSON file and `key=value` overrides.

One run is described by :class:`Config`. Its sections are dataclasses whose fields carry a
trailing comment saying what they mean; the `net` section is the chosen family's own config
dataclass. Values are coerced to the annotated type (so `--set train.g_lr=1e-4` works), unknown
keys are rejected with a "did you mean", and YAML is read with `safe_load` only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, GanforgeError, suggest


@dataclass
class DataConfig:
    name: str = "digits"  # built-in dataset name, or a path to the user's folder/file
    resolution: int = 0  # resize square images to this side in px (0 = keep native size)
    n_points: int = 50_000  # points drawn once for procedural 2-D datasets
    seed: int = 0  # seed of procedurally generated data, fixed across training seeds
    limit: int = 0  # use only the first N examples (0 = all)

    def validate(self) -> None:
        _at_least(self, 0, "data.", "resolution", "limit")
        _at_least(self, 1, "data.", "n_points")


@dataclass
class LossConfig:
    name: str = "ns"  # adversarial loss; see `ganforge list`
    clip: float = 0.01  # WGAN weight-clipping bound c (Arjovsky et al. 2017, Alg. 1)
    gp_lambda: float = 10.0  # WGAN-GP penalty weight lambda (Gulrajani et al. 2017, Eq. 3)

    def validate(self) -> None:
        _at_least(self, 0.0, "loss.", "clip", "gp_lambda")


LR_DECAYS = ("none", "linear", "cosine")  # train.lr_decay: learning-rate schedules


def check_lr_decay(value: str, name: str) -> None:
    """One line naming the schedules when `value` is not one of LR_DECAYS."""
    if value not in LR_DECAYS:
        raise ConfigError(f"{name} must be {', '.join(LR_DECAYS[:-1])} or {LR_DECAYS[-1]}, got {value!r}")


@dataclass
class TrainConfig:
    steps: int = 2000  # generator steps in total (a resumed run continues up to this)
    batch_size: int = 64  # real (and fake) examples per discriminator step
    n_dis: int = 1  # discriminator steps per generator step
    reuse_fakes: bool = False  # n_dis=1: D trains on the last G phase's fakes (one G forward less a step)
    g_lr: float = 2e-4  # generator Adam learning rate
    d_lr: float = 2e-4  # discriminator Adam learning rate (TTUR: may differ from g_lr)
    beta1: float = 0.5  # Adam beta1; 0.5 as in DCGAN (Radford et al. 2016)
    beta2: float = 0.999  # Adam beta2
    lr_decay: str = "none"  # none | linear (to 0 at the last step) | cosine (to 0 at the last step)
    ema_decay: float = 0.999  # decay of the generator's weight average used for sampling (0 = off)
    seed: int = 0  # seeds weights, noise and data order
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    deterministic: bool = False  # CUDA: deterministic cuDNN/cuBLAS kernels (slower), so runs and resumes are bit-exact there too
    log_every: int = 50  # steps between lines in stats.jsonl / the progress display
    sample_every: int = 500  # steps between sample grids in samples/ (0 = only at the end)
    ckpt_every: int = 500  # steps between checkpoints (0 = only at the end)
    keep_last: int = 3  # checkpoints kept in RUN/checkpoints/ (older ones are deleted)
    max_bad_steps: int = 20  # consecutive steps with NaN/inf losses or gradients before a rollback
    max_rollbacks: int = 3  # rollbacks (each halving the learning rates) before training stops
    n_grid: int = 64  # samples in each grid, drawn from one fixed noise batch
    channels_last: bool = True  # NHWC memory format for conv nets on images (no-op otherwise); faster on CPU
    fuse_upsample: bool = True  # nearest-x2 upsample + 3x3 conv run as one 4x4 transposed conv (exact)
    compile: bool = False  # torch.compile G and D (eager, with one warning, if compilation fails)
    amp: str = "off"  # mixed-precision forward passes: off | bf16 (CPU, CUDA) | fp16 (CUDA, loss-scaled)

    def validate(self) -> None:
        _at_least(self, 1, "train.", "steps", "batch_size", "n_dis", "log_every", "n_grid")
        _at_least(self, 1, "train.", "keep_last", "max_bad_steps")
        _at_least(self, 0, "train.", "sample_every", "ckpt_every", "seed", "max_rollbacks")
        for key in ("g_lr", "d_lr"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"train.{key} must be positive, got {getattr(self, key)}")
        check_lr_decay(self.lr_decay, "train.lr_decay")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ConfigError(f"train.amp must be off, bf16 or fp16, got {self.amp!r}")
        if self.amp == "fp16" and self.device == "cpu":
            raise ConfigError("train.amp=fp16 needs a CUDA device; on cpu use train.amp=bf16 or off")
        for key in ("beta1", "beta2", "ema_decay"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"train.{key} must lie in [0, 1), got {getattr(self, key)}")


@dataclass
class MonitorConfig:
    enabled: bool = True  # watch for mode collapse, oscillation, vanishing gradients, divergence
    check_every: int = 0  # steps between fixed-noise diversity checks (0 = at every log_every)
    n: int = 256  # fixed-noise samples generated per diversity check
    warmup: int = 500  # steps before the collapse/gradient checks; early reference values come from them
    window: int = 10  # logged records over which oscillation is judged
    min_diversity: float = 0.3  # collapse: sample / real mean pairwise distance below this
    mode_drop: float = 0.5  # collapse: modes captured down to this fraction of the best seen (>= 4)
    vanish_ratio: float = 0.01  # vanishing: Grad/G below this x its largest early value ...
    d_confident: float = 0.9  # ... while D/real - D/fake exceeds this (logit losses)
    explode: float = 1000.0  # divergence: |Loss/D| or |Loss/G| above this x max(1, its early size)
    osc_cv: float = 0.25  # oscillation: std of Loss/D and Loss/G over the window / their size
    osc_swing: float = 0.7  # oscillation: range of D/real - D/fake (x |D/real| + |D/fake| for critics)

    def validate(self) -> None:
        _at_least(self, 0, "monitor.", "check_every", "warmup")
        _at_least(self, 2, "monitor.", "n")
        _at_least(self, 3, "monitor.", "window")
        for key in ("min_diversity", "mode_drop", "vanish_ratio", "d_confident"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"monitor.{key} must lie in [0, 1], got {getattr(self, key)}")
        for key in ("explode", "osc_cv", "osc_swing"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"monitor.{key} must be positive, got {getattr(self, key)}")


@dataclass
class EvalConfig:
    every: int = 0  # steps between evaluations during training (0 = off); see docs/evaluation.md
    metrics: str = "fid"  # comma-separated metric groups: fid, kid, pr, dc, is, modes
    n: int = 2000  # generated samples per evaluation
    best: str = ""  # value kept best in RUN/best.safetensors: fid, kid, rkl, modes, precision, ... ("" = first metric's)
    inception_weights: str = ""  # FID Inception weights for RGB data ("" = $GANFORGE_INCEPTION_WEIGHTS)

    def validate(self) -> None:
        from .evaluate import best_metric  # the metric names live with the metrics

        _at_least(self, 0, "eval.", "every")
        _at_least(self, 2, "eval.", "n")
        try:
            best_metric(self.metrics, self.best)
        except GanforgeError as err:
            raise ConfigError(f"eval: {err}") from None


@dataclass
class StabConfig:
    """Known cures for unstable training, each composable with every loss and family."""

    spectral_norm: bool = False  # spectral normalisation of D's weights (Miyato et al. 2018)
    g_spectral_norm: bool = False  # ... and of G's weights (Zhang et al. 2019, SAGAN)
    r1_gamma: float = 0.0  # R1: gamma/2 E||grad D(x)||^2 on real data (Mescheder et al. 2018, Eq. 9)
    r2_gamma: float = 0.0  # R2: the same penalty on generated data
    reg_every: int = 16  # lazy regularisation: R1/R2 every k steps, scaled by k (Karras et al. 2020)
    label_smoothing: float = 0.0  # one-sided: D's real target 1 - s (Salimans et al. 2016, Sec. 3.4)
    instance_noise: float = 0.0  # std of Gaussian noise on D's inputs, annealed to 0 (Sonderby et al. 2017)
    noise_steps: int = 0  # steps over which instance noise decays linearly to 0 (0 = all of train.steps)
    mbstd: bool = False  # minibatch standard deviation feature in D (Karras et al. 2018, Sec. 3)
    mbdisc: int = 0  # minibatch discrimination kernels in D (Salimans et al. 2016, Sec. 3.2; 0 = off)
    feature_matching: float = 0.0  # weight of ||E f(x) - E f(G(z))||^2 in G's loss (Salimans et al. 2016)
    pac: int = 1  # PacGAN: D judges `pac` samples jointly (Lin et al. 2018; 1 = off)
    unrolled_steps: int = 0  # unrolled GAN: G sees D after k look-ahead steps of D's Adam (Metz et al. 2017)
    diffaug: str = ""  # DiffAugment policy for images, e.g. "color,translation,cutout" (Zhao et al. 2020)

    def validate(self) -> None:
        _at_least(self, 0.0, "stab.", "r1_gamma", "r2_gamma", "instance_noise", "feature_matching")
        _at_least(self, 0, "stab.", "mbdisc", "unrolled_steps", "noise_steps")
        _at_least(self, 1, "stab.", "reg_every", "pac")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"stab.label_smoothing must lie in [0, 0.5), got {self.label_smoothing}")
        known = ("color", "translation", "cutout")
        for policy in filter(None, (p.strip() for p in self.diffaug.split(","))):
            if policy not in known:
                raise ConfigError(
                    f"stab.diffaug: unknown policy {policy!r}{suggest(policy, known)}; use {', '.join(known)}"
                )


@dataclass
class SampleConfig:
    """How samples are drawn from the trained generator (not how it trains)."""

    jacobian_limit: float = 0.0  # JBTS: redraw z where ||dG/dz|| > this x median (Tanielian 2020; 0 off)

    def validate(self) -> None:
        if self.jacobian_limit and not self.jacobian_limit > 1.0:
            raise ConfigError(f"sample.jacobian_limit must be 0 (off) or above 1, got {self.jacobian_limit}")


@dataclass
class Config:
    model: str = "dcgan"  # GAN family; see `ganforge list`
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stab: StabConfig = field(default_factory=StabConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    net: Any = None  # the family's own config dataclass (filled by `ganforge.families`)


def _at_least(obj: Any, low: float, prefix: str, *keys: str) -> None:
    for key in keys:
        if getattr(obj, key) < low:
            raise ConfigError(f"{prefix}{key} must be at least {low}, got {getattr(obj, key)}")


# ---------------------------------------------------------------------------------------------
# dataclass <-> plain dict


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists/scalars (JSON and YAML safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert `value` (from YAML or a `key=value` string) to the annotated type `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return coerce(value, args[0], key)
    if hint is Any:
        return value
    if origin in (tuple, list):
        args = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.strip("[]() ").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return (tuple if origin is tuple else list)(coerce(v, inner, key) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                try:
                    as_float = float(value)
                except ValueError:
                    pass
                else:
                    if as_float.is_integer():
                        return int(as_float)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, prefix=f"{key}.")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "", base: Any = None) -> Any:
    """Build dataclass `cls` from `data`, starting from `base` (or the defaults).

    Unknown keys raise :class:`ConfigError` naming the key and the closest valid one.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    obj = dataclasses.replace(base) if base is not None else cls()
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'{suggest(str(key), names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = from_dict(type(current), value, prefix=f"{prefix}{key}.", base=current)
        else:
            value = coerce(value, hints[key], f"{prefix}{key}")
        setattr(obj, key, value)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def parse_override(text: str) -> tuple[list[str], str]:
    """'train.g_lr=1e-4' -> (['train', 'g_lr'], '1e-4')."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key")
    return parts, value.strip()


def nest(path: list[str], value: Any) -> dict[str, Any]:
    """(['a', 'b'], v) -> {'a': {'b': v}}."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def overrides_to_dict(overrides: list[str]) -> dict[str, Any]:
    """['train.steps=5', 'net.z_dim=8'] -> {'train': {'steps': '5'}, 'net': {'z_dim': '8'}}."""
    out: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text)
        out = merge(out, nest(path, value))
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file as a dict (YAML through safe_load: no Python tags)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"cannot read config file {path}: it is a folder, not a YAML or JSON file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        reason = str(err).splitlines()[0]
        mark = getattr(err, "problem_mark", None)
        if mark is not None:  # YAML: where and what ("line 3, column 1: expected ',' or ']' ...")
            reason = (
                f"line {mark.line + 1}, column {mark.column + 1}: {getattr(err, 'problem', None) or reason}"
            )
        raise ConfigError(
            f"config file {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {reason}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def save_file(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
