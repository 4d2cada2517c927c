"""Quality of a synthetic table against the real one: fidelity, utility, privacy.

Fidelity (the measures of SDMetrics' quality report, Patki et al. 2016):
  column shape   1 - KS statistic for numeric/datetime columns (missing values count as one
                 value below all others), 1 - total variation distance for categorical ones;
  pair trend     1 - |corr_real - corr_synth| / 2 for two numeric columns (Pearson), else
                 1 - TVD of the joint distribution, numbers cut into 10 quantile bins of the real data;
  overall        the mean of the two averages.
Utility: train-on-synthetic / test-on-real against train-on-real (Esteban et al. 2017; Jordon et
  al. 2022) with scikit-learn's histogram gradient boosting.
Privacy: distance to closest record (DCR) and nearest-neighbour distance ratio (NNDR) of
  synthetic rows to training rows, against the same for real hold-out rows; the share of exact
  copies; a distance-based membership-inference attack (Chen et al. 2020, "GAN-Leaks", full
  black-box): AUC of -distance-to-nearest-synthetic-row for training vs hold-out rows, 0.5 = no signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import DataError
from .schema import Schema
from .transformer import numeric_values

NUMERIC = ("continuous", "integer", "datetime")
DISCRETE = ("categorical", "boolean")


def _cols(schema: Schema, kinds: tuple[str, ...]) -> list[str]:
    return [c.name for c in schema.columns if c.kind in kinds]


def _num(schema: Schema, df: pd.DataFrame, name: str) -> np.ndarray:
    return numeric_values(schema[name], df[name])


def _codes(real: pd.Series, synth: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Category codes shared by both (missing is a category; synthetic-only values get their own)."""
    both = pd.concat([real.astype(object), synth.astype(object)], ignore_index=True)
    codes, uniques = pd.factorize(both, use_na_sentinel=False)
    return codes[: len(real)], codes[len(real) :], len(uniques)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a - F_b| with NaN as a value below all others (so missingness counts)."""
    a = np.sort(np.where(np.isnan(a), -np.inf, a))
    b = np.sort(np.where(np.isnan(b), -np.inf, b))
    if not len(a) or not len(b):
        return 1.0
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def tvd(ca: np.ndarray, cb: np.ndarray, k: int) -> float:
    pa = np.bincount(ca, minlength=k) / max(len(ca), 1)
    pb = np.bincount(cb, minlength=k) / max(len(cb), 1)
    return float(0.5 * np.abs(pa - pb).sum())


def bins(real: np.ndarray, synth: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, int]:
    """Quantile-bin codes (real's edges) with missing as bin n_bins."""
    finite = real[~np.isnan(real)]
    edges = (
        np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1])) if len(finite) else np.array([])
    )

    def code(v: np.ndarray) -> np.ndarray:
        c = np.searchsorted(edges, v, side="right")
        return np.where(np.isnan(v), len(edges) + 1, c)

    return code(real), code(synth), len(edges) + 2


def fidelity(
    real: pd.DataFrame, synth: pd.DataFrame, schema: Schema, max_pair_columns: int = 40
) -> dict[str, Any]:
    numeric, discrete = _cols(schema, NUMERIC), _cols(schema, DISCRETE)
    columns: dict[str, dict[str, Any]] = {}
    values: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in numeric:
        a, b = _num(schema, real, name), _num(schema, synth, name)
        values[name] = (a, b)
        columns[name] = {
            "kind": schema[name].kind,
            "metric": "KSComplement",
            "score": 1.0 - ks_statistic(a, b),
        }
    codes: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for name in discrete:
        codes[name] = _codes(real[name], synth[name])
        columns[name] = {
            "kind": schema[name].kind,
            "metric": "TVComplement",
            "score": 1.0 - tvd(*codes[name]),
        }
    for name in numeric:
        codes[name] = bins(*values[name])
    names = [c.name for c in schema.columns if c.name in columns][:max_pair_columns]
    pairs = []
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            if x in values and y in values:
                rr, rs = _corr(values[x][0], values[y][0]), _corr(values[x][1], values[y][1])
                score = 1.0 - abs(rr - rs) / 2 if np.isfinite(rr) and np.isfinite(rs) else np.nan
                pairs.append(
                    {
                        "columns": [x, y],
                        "metric": "CorrelationSimilarity",
                        "real": rr,
                        "synthetic": rs,
                        "score": score,
                    }
                )
            else:
                (ax, bx, kx), (ay, by, ky) = codes[x], codes[y]
                score = 1.0 - tvd(ax * ky + ay, bx * ky + by, kx * ky)
                pairs.append({"columns": [x, y], "metric": "ContingencySimilarity", "score": score})
    columns = {c.name: columns[c.name] for c in schema.columns if c.name in columns}  # table order
    shape = _mean([c["score"] for c in columns.values()])
    trend = _mean([p["score"] for p in pairs])
    overall = _mean([shape, trend])
    return {
        "overall": overall,
        "column_shapes": shape,
        "pair_trends": trend,
        "columns": columns,
        "pairs": pairs,
    }


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 2 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


# --- utility ----------------------------------------------------------------------------------------


def features(df: pd.DataFrame, schema: Schema, target: str, categories: dict[str, list[Any]]) -> np.ndarray:
    """Numbers for the model: numeric/datetime as floats, categories as codes of the real training set."""
    cols = []
    for c in schema.columns:
        if c.name == target or c.kind == "id":
            continue
        if c.kind in NUMERIC:
            cols.append(numeric_values(c, df[c.name]))
        else:
            idx = pd.Index(categories[c.name], dtype=object).get_indexer(df[c.name].astype(object))
            cols.append(np.where(idx < 0, np.nan, idx).astype(np.float64))
    return np.stack(cols, axis=1) if cols else np.zeros((len(df), 1))


def utility(
    train: pd.DataFrame, synth: pd.DataFrame, test: pd.DataFrame, schema: Schema, target: str, seed: int = 0
) -> dict[str, Any]:
    """Train-on-real and train-on-synthetic models, both scored on the real test rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score, roc_auc_score

    col = schema[target]
    cat_cols = [c for c in schema.columns if c.name != target and c.kind in DISCRETE]
    categories = {c.name: list(pd.unique(train[c.name].dropna().astype(object))) for c in cat_cols}
    mask = [
        c.kind in DISCRETE and len(categories[c.name]) <= 250
        for c in schema.columns
        if c.name != target and c.kind != "id"
    ]
    X = {
        k: features(d, schema, target, categories)
        for k, d in (("real", train), ("synthetic", synth), ("test", test))
    }
    out: dict[str, Any] = {"target": target, "notes": []}
    if col.kind in DISCRETE:
        labels = pd.Index(
            pd.unique(pd.concat([train[target], test[target]]).astype(object).dropna()), dtype=object
        )

        def y_of(d: pd.DataFrame) -> np.ndarray:
            return labels.get_indexer(d[target].astype(object))

        y = {k: y_of(d) for k, d in (("real", train), ("synthetic", synth), ("test", test))}
        _check_target(target, y["real"] >= 0, y["test"] >= 0)
        test_ok = y["test"] >= 0
        yt = y["test"][test_ok]
        binary = len(labels) == 2
        out.update(task="classification", metric="macro_f1")
        if binary and len(np.unique(yt)) < 2:
            out["notes"].append(f"ROC AUC not computed: the real test rows hold one class of {target!r}")
        for name in ("real", "synthetic"):
            ok = y[name] >= 0
            classes = np.unique(y[name][ok])
            proba = None
            if not ok.any():
                out[name] = dict.fromkeys(
                    ("accuracy", "macro_f1", "roc_auc") if binary else ("accuracy", "macro_f1")
                )
                out["notes"].append(f"{name} rows: no values of {target!r} to train on, no scores")
                continue
            if len(classes) < 2:  # one class: the model can only predict it
                pred = np.full(test_ok.sum(), classes[0])
                kept = labels[classes[0]]
                out["notes"].append(
                    f"{name} training rows hold one class of {target!r} ({kept!r}): the model can only "
                    "predict it" + ("; ROC AUC not computed" if binary else "")
                )
            else:
                model = HistGradientBoostingClassifier(categorical_features=mask or None, random_state=seed)
                model.fit(X[name][ok], y[name][ok])
                pred = model.predict(X["test"][test_ok])
                proba = model.predict_proba(X["test"][test_ok]) if binary else None
            res = {
                "accuracy": accuracy_score(yt, pred),
                "macro_f1": f1_score(yt, pred, average="macro", zero_division=0),
            }
            if binary:  # the key is always there (None: not computable), so real and synthetic match
                res["roc_auc"] = (
                    roc_auc_score(yt, proba[:, 1]) if proba is not None and len(np.unique(yt)) == 2 else None
                )
            out[name] = res
    else:
        out.update(task="regression", metric="r2")
        yt = numeric_values(col, test[target])
        t_ok = ~np.isnan(yt)
        _check_target(target, ~np.isnan(numeric_values(col, train[target])), t_ok)
        for name, d in (("real", train), ("synthetic", synth)):
            yv = numeric_values(col, d[target])
            ok = ~np.isnan(yv)
            if not ok.any():
                out[name] = {"r2": None, "mae": None}
                out["notes"].append(f"{name} rows: no values of {target!r} to train on, no scores")
                continue
            model = HistGradientBoostingRegressor(categorical_features=mask or None, random_state=seed)
            model.fit(X[name][ok], yv[ok])
            pred = model.predict(X["test"][t_ok])
            out[name] = {"r2": r2_score(yt[t_ok], pred), "mae": mean_absolute_error(yt[t_ok], pred)}
    real_score, synth_score = out["real"][out["metric"]], out["synthetic"][out["metric"]]
    out["ratio"] = (
        synth_score / real_score
        if real_score is not None and synth_score is not None and real_score > 0
        else None
    )
    return out


def _check_target(target: str, train_ok: np.ndarray, test_ok: np.ndarray) -> None:
    """A target with no values in the real training or test rows cannot score anything: say so."""
    for ok, rows in ((train_ok, "training"), (test_ok, "test")):
        if not ok.any():
            raise DataError(
                f"target {target!r} has no values in the real {rows} rows; choose a column to predict"
            )


# --- privacy ---------------------------------------------------------------------------------------------


def encode_for_distance(
    frames: list[pd.DataFrame], schema: Schema, ref: pd.DataFrame, top: int = 50
) -> list[Tensor]:
    """Rows as vectors where one differing category adds 1 to the squared distance and numbers
    are scaled to [0, 1] by the reference table's range (missing: an indicator, value 0)."""
    blocks: list[list[np.ndarray]] = [[] for _ in frames]
    for c in schema.columns:
        if c.kind == "id":
            continue
        if c.kind in NUMERIC:
            r = numeric_values(c, ref[c.name])
            lo, hi = (
                np.nanmin(r) if np.isfinite(r).any() else 0.0,
                np.nanmax(r) if np.isfinite(r).any() else 1.0,
            )
            span = hi - lo if hi > lo else 1.0
            for out, df in zip(blocks, frames):
                v = (numeric_values(c, df[c.name]) - lo) / span
                out.append(np.nan_to_num(v, nan=0.0)[:, None])
                if c.nullable:
                    out.append(np.isnan(v).astype(np.float64)[:, None])
        else:
            keep = ref[c.name].astype(object).value_counts(dropna=False).index[:top]
            index = pd.Index(keep, dtype=object)
            for out, df in zip(blocks, frames):
                idx = index.get_indexer(df[c.name].astype(object))
                onehot = np.zeros((len(df), len(index) + 1))
                onehot[np.arange(len(df)), np.where(idx < 0, len(index), idx)] = 1.0
                out.append(onehot / np.sqrt(2.0))
    return [torch.from_numpy(np.concatenate(b, axis=1)).float() for b in blocks]


def nearest(query: Tensor, ref: Tensor, k: int = 2, chunk: int = 2048) -> Tensor:
    """(Nq, k) Euclidean distances to the k nearest rows of `ref`, in chunks (no (Nq, Nr) matrix kept)."""
    k = min(k, ref.shape[0])
    out = []
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i : i + chunk], ref, compute_mode="use_mm_for_euclid_dist")
        out.append(d.topk(k, dim=1, largest=False).values)
    return torch.cat(out).clamp_min(0)


def row_hashes(df: pd.DataFrame, schema: Schema) -> np.ndarray:
    cols = [c.name for c in schema.columns if c.kind != "id"]
    norm = pd.DataFrame({c: df[c].astype(str).to_numpy() for c in cols})
    return pd.util.hash_pandas_object(norm, index=False).to_numpy()


def privacy(
    train: pd.DataFrame,
    synth: pd.DataFrame,
    schema: Schema,
    holdout: pd.DataFrame | None = None,
    seed: int = 0,
    max_rows: int = 5000,
    max_ref: int = 50_000,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)

    def sub(df: pd.DataFrame, m: int) -> pd.DataFrame:
        return df.iloc[np.sort(rng.choice(len(df), m, replace=False))] if len(df) > m else df

    ref = sub(train, max_ref)
    syn = sub(synth, max_rows)
    train_hash = set(row_hashes(train, schema).tolist())
    out: dict[str, Any] = {
        "exact_copies": float(np.mean([h in train_hash for h in row_hashes(synth, schema)])),
        "rows_compared": {"train": len(ref), "synthetic": len(syn)},
    }
    frames = [ref, syn] + ([sub(holdout, max_rows)] if holdout is not None else [])
    enc = encode_for_distance(frames, schema, train)
    d_syn = nearest(enc[1], enc[0])
    out["dcr_synthetic"] = _dist_summary(d_syn)
    if holdout is None:
        out["note"] = "no hold-out given: baselines and the membership attack need rows not used for training"
        return out
    hold = frames[2]
    d_hold = nearest(enc[2], enc[0])
    out["dcr_holdout"] = _dist_summary(d_hold)
    hold_hash = row_hashes(holdout, schema)
    out["exact_copies_holdout"] = float(np.mean([h in train_hash for h in hold_hash]))
    # Closer to a training row than to a hold-out row? ~ |train| / (|train| + |holdout|) by chance.
    m = min(len(hold), len(ref))
    t_idx, h_idx = rng.choice(len(ref), m, replace=False), rng.choice(len(hold), m, replace=False)
    d_t = nearest(enc[1], enc[0][t_idx], k=1)[:, 0]
    d_h = nearest(enc[1], enc[2][h_idx], k=1)[:, 0]
    out["closer_to_train_share"] = float((d_t < d_h).float().mean() + 0.5 * (d_t == d_h).float().mean())
    # Membership inference: training rows should not sit closer to synthetic rows than hold-out rows do.
    from sklearn.metrics import roc_auc_score

    members = nearest(enc[0][t_idx], enc[1], k=1)[:, 0]
    others = nearest(enc[2][h_idx], enc[1], k=1)[:, 0]
    scores = -torch.cat([members, others]).numpy()
    labels = np.r_[np.ones(m), np.zeros(m)]
    out["mia_auc"] = float(roc_auc_score(labels, scores))
    return out


def _dist_summary(d: Tensor) -> dict[str, float]:
    d1 = d[:, 0]
    d2 = d[:, 1] if d.shape[1] > 1 else d1
    ratio = torch.where(d2 > 0, d1 / d2.clamp_min(1e-12), torch.ones_like(d1))  # 0/0: duplicates, 1
    return {
        "dcr_median": float(d1.median()),
        "dcr_p05": float(torch.quantile(d1, 0.05)),
        "nndr_median": float(ratio.median()),
        "zero_distance_share": float((d1 < 1e-9).float().mean()),
    }
