"""`TabularGAN`: fit a CTGAN-class model on a table, sample tables, save and load (SDV's shape).

    >>> from ganforge.tabular import TabularGAN
    >>> model = TabularGAN(epochs=300).fit(df)            # a DataFrame, or a .csv/.parquet path
    >>> synth = model.sample(1000, conditions={"cut": "Ideal"})
    >>> model.save("runs/diamonds"); TabularGAN.load("runs/diamonds").sample(10)

The networks and losses are the `tabular` family (:mod:`ganforge.families.tabular`); training
is the shared :class:`ganforge.engine.Trainer`. A saved model is a folder of JSON (parameters,
fitted transformer) and safetensors (the training state): no pickle.

With `dp_epsilon`, the critic is trained with DP-SGD and the spent (epsilon, delta) is recorded in
the folder's JSON (:mod:`ganforge.tabular.privacy`; it needs the optional `opacus` package).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..config import check_lr_decay
from ..engine import Callback, Trainer
from ..engine.checkpoint import atomic_write, load_checkpoint, save_checkpoint, sha256_file
from ..errors import CheckpointError, ConfigError, DataError, GanforgeError, suggest
from ..families import DataSpec
from . import privacy
from .calibration import CALIBRATE_CHUNK, POOL_FACTOR, rake_weights, weighted_subsample
from .io import TableSource, read_table
from .schema import infer_schema
from .transformer import Codec, TableTransformer, TabularWarning

FORMAT = "ganforge-tabular/1"
MODEL_FILE, INFO_FILE, STATS_FILE = "model.safetensors", "tabular.json", "stats.jsonl"
COND_SAMPLING = ("data", "log", "uniform")  # how sample() draws the category of c (see there)
GENERATE_BATCH = 8_192  # rows per generator pass when sampling (bounds memory on wide tables)


class _Recorder(Callback):
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.records.append(record)


class TabularGAN:
    """A conditional tabular GAN (CTGAN, Xu et al. 2019) trained by ganforge's engine.

    `epochs` passes over the data of `len(table) // batch_size` steps each (as CTGAN counts);
    `steps` overrides the total. `schema` overrides inferred column kinds (dict or JSON/YAML
    path, see :mod:`ganforge.tabular.schema`).

    Training defaults differ from CTGAN's in two ways (`benchmarks/bench_tabular_defaults.py`,
    docs/tabular.md): samples come from an exponential moving average of G's weights
    (`ema_decay=0.999`; 0 samples G's last weights, as CTGAN does), which raised fidelity on all
    seven tables tried, and Adam's step is 5e-4 for both networks (CTGAN: 2e-4), which raised
    fidelity and utility on fits of 20-100 epochs (diamonds, 5 seeds: 0.914 / 0.330 with the
    average alone, 0.927 / 0.389) but lost fidelity on small tables at 300 steps (midwest 0.781
    -> 0.737). `lr_decay` ("linear", "cosine") lowers the step to 0 by the last step. The
    average costs 0.5 % of a step.

    `amp="bf16"` runs the forward passes in bfloat16 (CPU or CUDA; the gradient penalty and the
    losses stay float32). On this project's 2-core CPU it fitted `fair` 1.2-1.4x faster with one
    torch thread, but only 1.05-1.1x with two, and fidelity dropped by up to 0.02.

    `share_fakes=True` (the default): the generator step back-propagates through the rows the
    critic step just judged, made by the same G weights, instead of drawing new ones (the order
    of PyTorch's DCGAN example): one generator pass a step, ~1.2x faster. Against CTGAN's step
    (`share_fakes=False`), medians of 5 seeds: the same fidelity on `diamonds` and `fair`, utility
    the same and -0.025, lower on 7 of the 10 (table, seed) pairs.

    `reuse_fakes=True` trains the critic on the rows (and conditional vectors) the previous
    generator step made instead of generating new ones: also one generator pass less per step,
    but those rows are one G update old, and fidelity on `fair` fell by 0.03-0.05 on each of
    3 seeds, so it is off.

    `dp_epsilon` trains the critic with DP-SGD (Abadi et al. 2016) calibrated to spend at most
    (dp_epsilon, dp_delta) over the planned steps; `dp_delta` defaults to 1 / rows^1.1 and
    `dp_max_grad_norm` is the per-pack clip C. `privacy` then holds what was spent. The column
    transformer is fitted without privacy (see :mod:`ganforge.tabular.privacy`).
    """

    def __init__(
        self,
        epochs: int = 300,
        batch_size: int = 500,
        *,
        steps: int | None = None,
        seed: int = 0,
        schema: dict[str, Any] | str | Path | None = None,
        z_dim: int = 128,
        g_dims: tuple[int, ...] = (256, 256),
        d_dims: tuple[int, ...] = (256, 256),
        pac: int = 10,
        g_lr: float = 5e-4,
        d_lr: float = 5e-4,
        ema_decay: float = 0.999,
        lr_decay: str = "none",
        n_dis: int = 1,
        log_frequency: bool = True,
        device: str = "cpu",
        amp: str = "off",
        reuse_fakes: bool = False,
        share_fakes: bool = True,
        max_fit_rows: int = 20_000,
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
        dp_max_grad_norm: float = 1.0,
        verbose: bool = False,
    ) -> None:
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("steps", steps)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")
        check_seed(seed)
        if dp_epsilon is not None and not 0 < dp_epsilon < math.inf:
            raise ConfigError(f"dp_epsilon must be a positive finite number, got {dp_epsilon}")
        if dp_delta is not None and not 0 < dp_delta < 1:
            raise ConfigError(f"dp_delta must lie in (0, 1), got {dp_delta}")
        if not dp_max_grad_norm > 0:
            raise ConfigError(f"dp_max_grad_norm must be positive, got {dp_max_grad_norm}")
        for name, value in (("g_lr", g_lr), ("d_lr", d_lr)):
            if not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a positive finite number, got {value}")
        if not 0 <= ema_decay < 1:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        check_lr_decay(lr_decay, "lr_decay")
        self.params: dict[str, Any] = {
            "epochs": epochs,
            "batch_size": batch_size,
            "steps": steps,
            "seed": seed,
            "z_dim": z_dim,
            "g_dims": list(g_dims),
            "d_dims": list(d_dims),
            "pac": pac,
            "g_lr": g_lr,
            "d_lr": d_lr,
            "ema_decay": ema_decay,
            "lr_decay": lr_decay,
            "n_dis": n_dis,
            "log_frequency": log_frequency,
            "device": device,
            "amp": amp,
            "reuse_fakes": reuse_fakes,
            "share_fakes": share_fakes,
            "max_fit_rows": max_fit_rows,
            "dp_epsilon": dp_epsilon,
            "dp_delta": dp_delta,
            "dp_max_grad_norm": dp_max_grad_norm,
        }
        self.schema_overrides = schema
        self.verbose = verbose
        self.transformer: TableTransformer | None = None
        self.trainer: Trainer | None = None
        self.source = TableSource()
        self.info: dict[str, Any] = {}  # rows, width, fit and transform seconds, steps
        self.stats: list[dict[str, Any]] = []
        self.privacy: dict[str, Any] | None = None  # what a private fit spent (privacy.privacy_record)

    # --- fit ----------------------------------------------------------------------------------------

    def fit(
        self, data: pd.DataFrame | str | Path, delimiter: str | None = None, encoding: str = "utf-8"
    ) -> TabularGAN:
        """Learn the table `data` (a DataFrame or a .csv/.tsv/.parquet path); returns self."""
        t0 = time.perf_counter()
        p = self.params
        opacus_version = privacy.require_opacus() if p["dp_epsilon"] else ""
        self.privacy = None
        if isinstance(data, (str, Path)):
            data, self.source = read_table(data, delimiter=delimiter, encoding=encoding)
        elif not isinstance(data, pd.DataFrame):
            raise DataError(f"fit() takes a DataFrame or a path to a table, not {type(data).__name__}")
        check_table(data)
        schema = infer_schema(data, self.schema_overrides)
        self.transformer = TableTransformer(schema).fit(
            data, seed=p["seed"], max_fit_rows=p["max_fit_rows"], threads=os.cpu_count() or 1
        )
        x = self.transformer.transform(data, seed=p["seed"])
        t_transform = time.perf_counter() - t0
        n = len(data)
        self.info = {
            "rows": n,
            "columns": data.shape[1],
            "width": int(x.shape[1]),
            "transform_seconds": t_transform,
        }
        if n < 2 * p["pac"]:
            warnings.warn(
                f"the table has only {n} rows: the model can barely do more than repeat them "
                "(check the privacy report before sharing samples)",
                TabularWarning,
                stacklevel=2,
            )
        if x.shape[1] == 0:
            warnings.warn(
                "every column is constant or an ID: nothing to learn, samples repeat the constants",
                TabularWarning,
                stacklevel=2,
            )
            self.trainer = None
            self.info.update(steps=0, fit_seconds=time.perf_counter() - t0)
            return self
        steps = p["steps"] or p["epochs"] * max(n // p["batch_size"], 1)
        dp = self._calibrate(n, steps) if p["dp_epsilon"] else {}
        cfg = self._config(steps, dp.get("sigma", 0.0))
        recorder = _Recorder()
        callbacks: list[Callback] = [recorder]
        if self.verbose:
            from ..engine.run import Progress

            callbacks.append(Progress())
        from ..data import Dataset

        ds = Dataset(x=torch.from_numpy(x), kind="table", name="table")
        self.trainer = Trainer(cfg, DataSpec("table", (x.shape[1],)), ds, callbacks=callbacks)
        use_fused_adam(self.trainer)
        with torch.random.fork_rng(devices=[]):  # D's dropout draws from the global RNG: seed it
            torch.manual_seed(p["seed"] + 4)
            self.trainer.fit()
        self.stats = recorder.records
        self.info.update(steps=steps, fit_seconds=time.perf_counter() - t0)
        if dp:
            self.privacy = privacy.privacy_record(
                target_epsilon=p["dp_epsilon"],
                delta=dp["delta"],
                sigma=dp["sigma"],
                clip=p["dp_max_grad_norm"],
                sample_rate=dp["q"],
                steps=self.trainer.family.dp_steps,  # the critic steps taken, rolled-back ones included
                batch_size=p["batch_size"],
                pac=p["pac"],
                opacus_version=opacus_version,
            )
        return self

    def _calibrate(self, n: int, steps: int) -> dict[str, float]:
        """delta, the sampling rate q = B / N and the noise multiplier that spends dp_epsilon over
        the planned critic steps (steps x n_dis)."""
        p = self.params
        if p["batch_size"] > n:
            raise ConfigError(
                f"private training draws batch_size ({p['batch_size']}) distinct rows per step, "
                f"but the table has {n}: lower the batch size"
            )
        delta = p["dp_delta"] or privacy.default_delta(n)
        q = p["batch_size"] / n
        sigma = privacy.noise_multiplier(p["dp_epsilon"], delta, q, steps * p["n_dis"])
        return {"delta": delta, "q": q, "sigma": sigma}

    def _config(self, steps: int, dp_sigma: float = 0.0) -> Any:
        from ..api import build_config

        p = self.params
        settings = {
            "model": "tabular",
            "data": {"name": "table"},
            "train": {
                "steps": steps,
                "batch_size": p["batch_size"],
                "n_dis": p["n_dis"],
                "g_lr": p["g_lr"],
                "d_lr": p["d_lr"],
                "ema_decay": p.get("ema_decay", 0.0),  # folders saved before it existed: no average
                "lr_decay": p.get("lr_decay", "none"),
                "seed": p["seed"],
                "device": p["device"],
                "amp": p.get("amp", "off"),
                "reuse_fakes": p.get("reuse_fakes", False),
                "log_every": max(1, min(50, steps // 20)),
                "sample_every": 0,
                "ckpt_every": 0,
            },
            "stab": {"pac": p["pac"]},
            "net": {
                "z_dim": p["z_dim"],
                "g_dims": p["g_dims"],
                "d_dims": p["d_dims"],
                "log_frequency": p["log_frequency"],
                "share_fakes": p.get("share_fakes", True),
                "spans": self.transformer.spans,
                "cond_spans": self.transformer.cond_spans,
                "dp_noise_multiplier": dp_sigma,
                "dp_max_grad_norm": p["dp_max_grad_norm"],
            },
        }
        return build_config(settings, DataSpec("table", (self.transformer.width,)))

    # --- sample ---------------------------------------------------------------------------------------

    def sample(
        self,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        max_tries: int = 100,
        cond_sampling: str = "data",
        calibrate: bool = True,
    ) -> pd.DataFrame:
        """`n` synthetic rows with the training table's columns and dtypes.

        `conditions` fixes categorical/boolean columns, e.g. {"cut": "Ideal"}: the first one
        drives G's conditional vector, and rows not matching all of them are rejected (an error
        if `max_tries` batches do not yield `n` rows). The same seed gives the same rows.

        Without conditions each row's conditional vector names a categorical column (uniformly)
        and one of its categories, drawn by `cond_sampling`: "data" (its training frequency: the
        data's marginals), "log" (~ log(1 + count), as CTGAN's reference code samples: more rows
        of rare categories, e.g. for a classifier of a rare class, at some cost in marginals) or
        "uniform" (every category alike: the most balanced rows).

        `calibrate` (with "data" and no conditions): draw the rows from pools of POOL_FACTOR
        times as many generated ones (one pool per CALIBRATE_CHUNK rows), weighted so that every
        categorical column's category frequencies are the training table's
        (:mod:`ganforge.tabular.calibration`). G's free columns lean towards frequent categories;
        this corrects their margins and keeps the pool's associations. `calibrate=False` returns
        G's rows as they come."""
        tr = self._fitted()
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be a whole number of at least 1, got {n!r}")
        if seed is not None:
            check_seed(seed)
        if cond_sampling not in COND_SAMPLING:
            raise ConfigError(
                f"cond_sampling must be one of {', '.join(COND_SAMPLING)}, got {cond_sampling!r}"
            )
        targets = self._conditions(conditions or {})
        seed = self.params["seed"] if seed is None else seed
        if self.trainer is None:
            return tr.inverse(np.zeros((n, 0), dtype=np.float32))
        device = self.trainer.device
        gen = torch.Generator(device=device).manual_seed(seed)
        if calibrate and cond_sampling == "data" and not targets:
            return tr.inverse(self._calibrated(n, gen, seed))
        chunk = max(n, 1000) if targets else n
        kept: list[np.ndarray] = []
        have = 0
        for _ in range(max_tries if targets else 1):
            x = self._generate(chunk, targets[0] if targets else None, gen, cond_sampling)
            if targets:
                ok = np.ones(len(x), dtype=bool)
                for start, end, slot in targets:
                    ok &= x[:, start:end].argmax(axis=1) == slot
                x = x[ok]
            kept.append(x)
            have += len(x)
            if have >= n:
                break
        if have < n:
            raise DataError(
                f"only {have} of {n} rows matched the conditions {conditions} after {max_tries} batches; "
                "the combination may be too rare in the training data"
            )
        return tr.inverse(np.concatenate(kept)[:n])

    def _calibrated(self, n: int, gen: torch.Generator, seed: int, cond_sampling: str = "data") -> np.ndarray:
        """(n, D) rows drawn from a pool of generated ones (c drawn by `cond_sampling`), raked to
        the training category counts."""
        blocks, start = [], 0
        for c in self._fitted().codecs:
            if c.encoding == "onehot":
                blocks.append((start, c))
            start += c.width
        if not blocks:
            return self._generate(n, None, gen, cond_sampling)
        targets = [np.asarray(c.counts, dtype=np.float64) for _, c in blocks]
        rng = np.random.default_rng(seed)
        parts = []
        for start in range(0, n, CALIBRATE_CHUNK):  # pools of at most POOL_FACTOR x CALIBRATE_CHUNK rows
            m = min(CALIBRATE_CHUNK, n - start)
            pool = self._generate(POOL_FACTOR * m, None, gen, cond_sampling)
            weights = rake_weights([pool[:, s : s + c.width].argmax(axis=1) for s, c in blocks], targets)
            parts.append(pool[weighted_subsample(weights, m, rng)])
        return np.concatenate(parts)

    def _generate(
        self, n: int, target: tuple[int, int, int] | None, gen: torch.Generator, cond_sampling: str = "data"
    ) -> np.ndarray:
        """(n, D) activated rows from G (eval mode), with c fixed or drawn by `cond_sampling`, in
        batches of GENERATE_BATCH rows (BN uses its running statistics: batching does not change G)."""
        parts = []
        for start in range(0, n, GENERATE_BATCH):
            parts.append(self._generate_batch(min(GENERATE_BATCH, n - start), target, gen, cond_sampling))
        return np.concatenate(parts)

    @torch.inference_mode()
    def _generate_batch(
        self, n: int, target: tuple[int, int, int] | None, gen: torch.Generator, cond_sampling: str
    ) -> np.ndarray:
        trainer = self.trainer
        assert trainer is not None
        fam, G, device = trainer.family, trainer.G_sample, trainer.device
        lay = fam.layout
        c = None
        if lay.cond_dim:
            if target is not None:
                pos = self._cond_position(target)
                col = torch.full((n,), pos, dtype=torch.long, device=device)
            else:
                freq = self._cond_frequencies(cond_sampling).to(device)  # (cond_dim,)
                col = torch.multinomial(freq, n, replacement=True, generator=gen)
            c = torch.zeros(n, lay.cond_dim, device=device).scatter_(1, col[:, None], 1.0)
        was_training = G.training
        G.eval()
        try:
            z = fam.sample_z(n, device, gen)
            x = fam.generate(G, z, c, generator=gen)
        finally:
            G.train(was_training)
        return x.float().cpu().numpy()

    def _cond_frequencies(self, cond_sampling: str = "data") -> torch.Tensor:
        """The probability of each slot of c: a column uniformly, then a category by its training
        count ("data"), by log(1 + count) ("log") or uniformly among the seen ones ("uniform")."""
        tr = self._fitted()
        probs = []
        for c in tr.codecs:
            if c.encoding == "onehot":
                counts = np.asarray(c.counts, dtype=np.float64)
                weights = {"data": counts, "log": np.log1p(counts), "uniform": (counts > 0) * 1.0}
                weight = weights[cond_sampling]
                probs.append(weight / weight.sum())
        return torch.from_numpy(np.concatenate(probs) / len(probs)).float()

    def _cond_position(self, target: tuple[int, int, int]) -> int:
        """Position in c of the category `slot` of the column whose block starts at `start`."""
        start, _, slot = target
        tr = self._fitted()
        pos, offset = 0, 0
        for c in tr.codecs:
            if c.encoding == "onehot":
                if offset == start:
                    return pos + slot
                pos += c.width
            offset += c.width
        raise AssertionError("condition on a column outside the conditional vector")

    def _conditions(self, conditions: dict[str, Any]) -> list[tuple[int, int, int]]:
        """[(block start, block end, slot)] for each condition, checked; one-hot columns first."""
        tr = self._fitted()
        if not isinstance(conditions, dict):
            raise DataError("conditions must map column names to values, e.g. {'color': 'red'}")
        offsets = tr.column_offsets()
        codecs = {c.name: c for c in tr.codecs}
        out = []
        for name, value in conditions.items():
            if name not in codecs:
                raise DataError(
                    f"cannot condition on unknown column {name!r}{suggest(str(name), list(codecs))}; "
                    f"columns: {', '.join(map(str, codecs))}"
                )
            c = codecs[name]
            kind = tr.schema[name].kind
            if kind not in ("categorical", "boolean"):
                raise DataError(f"can only condition on categorical or boolean columns; {name!r} is {kind}")
            if c.encoding == "constant":
                if not _same(value, c.value):
                    raise DataError(f"column {name!r} only ever holds {c.value!r}, not {value!r}")
                continue
            slot = category_slot(c, value)
            start, end = offsets[name]
            out.append((start, end, slot))
        return out

    def _fitted(self) -> TableTransformer:
        if self.transformer is None:
            raise ConfigError("the model is not fitted: call fit() first")
        return self.transformer

    # --- save / load -------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model folder (tabular.json, model.safetensors, stats.jsonl), each file atomically."""
        tr = self._fitted()
        root = Path(path)
        if root.is_file():
            raise ConfigError(f"{root} is a file, not a folder")
        doc = {
            "format": FORMAT,
            "ganforge": __version__,
            "torch": torch.__version__,
            "pandas": pd.__version__,
            "python": platform.python_version(),
            "params": self.params,
            "source": self.source.to_dict(),
            "info": self.info,
            "has_model": self.trainer is not None,
            "privacy": self.privacy,
            "transformer": tr.to_dict(),
        }
        text = json.dumps(doc, indent=1, default=_json_default)  # before any file: all or nothing
        lines = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.stats)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot create the model folder {root}: {err.strerror or err}") from None
        if self.trainer is not None:
            tensors, meta = self.trainer.state()
            doc["model_sha256"] = save_checkpoint(root / MODEL_FILE, tensors, meta)  # load() checks it
            text = json.dumps(doc, indent=1, default=_json_default)
        atomic_write(root / INFO_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        atomic_write(root / STATS_FILE, lambda tmp: Path(tmp).write_text(lines, encoding="utf-8"))
        return root

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> TabularGAN:
        from ..api import build_config

        root = Path(path)
        info = root / INFO_FILE
        if not info.is_file():
            raise CheckpointError(f"{root} is not a saved TabularGAN folder (no {INFO_FILE})")
        try:
            doc = json.loads(info.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{info} is corrupt") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise CheckpointError(f"{info}: unknown format {found!r} (expected {FORMAT})")
        try:
            params = dict(doc["params"], device=device)
            if params.get("amp") == "fp16" and not str(device).startswith("cuda"):
                params["amp"] = "off"  # sampling runs in float32 anyway; fp16 exists only on CUDA
            model = cls(**{k: v for k, v in params.items()})
            model.transformer = TableTransformer.from_dict(doc["transformer"])
            model.source = TableSource(**doc.get("source", {}))
            model.info = dict(doc.get("info", {}))
            model.privacy = doc.get("privacy")
            width = sum(c.width for c in model.transformer.codecs)
            names = [c.name for c in model.transformer.codecs]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{info} is malformed ({type(err).__name__}: {err})") from None
        except GanforgeError as err:
            raise CheckpointError(f"{info} is malformed: {err}") from None
        if names != [c.name for c in model.transformer.schema.columns]:
            raise CheckpointError(f"{info} is malformed: its codecs do not match its schema's columns")
        if doc.get("has_model"):
            expected = doc.get("model_sha256")  # folders saved before it was recorded have none
            if expected and (root / MODEL_FILE).is_file() and sha256_file(root / MODEL_FILE) != expected:
                raise CheckpointError(
                    f"{root / MODEL_FILE} does not match the checksum in {INFO_FILE}: the file is corrupt"
                )
            tensors, meta = load_checkpoint(root / MODEL_FILE)
            spec = DataSpec.from_dict(meta["spec"])
            if spec.shape[0] != width:
                raise CheckpointError(
                    f"{root}: {MODEL_FILE} generates {spec.shape[0]} values per row but {INFO_FILE} "
                    f"describes {width}; the two files are not from the same fit"
                )
            cfg = build_config(dict(meta["config"], train=dict(meta["config"]["train"], device=device)), spec)
            model.trainer = Trainer(cfg, spec, data=None)
            model.trainer.load_state(tensors, meta, weights_only=True)
        elif width:
            raise CheckpointError(f"{info} is malformed: it has learnable columns but says it has no model")
        model.stats = read_stats(root / STATS_FILE)
        return model


def use_fused_adam(trainer: Trainer) -> None:
    """Switch both optimisers to the fused Adam kernel where torch has one for the device: the
    same update in one kernel, ~8x faster than the per-tensor loop on a CPU for these networks."""
    try:
        torch.optim.Adam([torch.zeros(1, device=trainer.device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return
    for opt in (trainer.opt_G, trainer.opt_D):
        for group in opt.param_groups:
            group.update(fused=True, foreach=False)


def category_slot(c: Codec, value: Any) -> int:
    """The one-hot slot of `value` in a categorical column (the missing slot for None/NaN)."""
    cats = c.categories or []
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if c.null:
            return len(cats)
        raise DataError(f"column {c.name!r} has no missing values to condition on")
    for i, cat in enumerate(cats):
        if _same(value, cat):
            return i
    for i, cat in enumerate(cats):  # "2" from a command line for the category 2
        if str(cat) == str(value):
            return i
    shown = ", ".join(repr(v) for v in cats[:10]) + (", ..." if len(cats) > 10 else "")
    raise DataError(
        f"column {c.name!r} has no value {value!r}{suggest(str(value), [str(v) for v in cats])}; values: {shown}"
    )


def _same(a: Any, b: Any) -> bool:
    """a == b, but True is not 1 (a boolean category is not a number)."""
    if isinstance(a, (bool, np.bool_)) != isinstance(b, (bool, np.bool_)):
        return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def check_seed(seed: Any) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be a whole number in [0, 2^63), got {seed!r}")


def check_table(df: pd.DataFrame) -> None:
    """Refuse what a table model cannot learn or give back, with the column named."""
    if isinstance(df.columns, pd.MultiIndex):
        raise DataError("the table has multi-level column names; flatten them first")
    odd = [c for c in df.columns if not isinstance(c, str)]
    if odd:
        raise DataError(
            f"column names must be text, got {odd[0]!r} ({type(odd[0]).__name__}); "
            "e.g. df.columns = df.columns.astype(str)"
        )
    for name in df.columns[[pd.api.types.is_object_dtype(t) for t in df.dtypes]]:
        try:
            df[name].nunique()  # hashes every value: lists, arrays, dicts and sets are not hashable
        except TypeError:
            raise DataError(
                f"column {name!r} holds lists or arrays, which a table model cannot learn"
            ) from None


def read_stats(path: Path) -> list[dict[str, Any]]:
    """The training log (diagnostics only: sampling does not need it); unreadable lines are skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
