"""What each column of a table is: inferred from a DataFrame, overridable from a JSON/YAML file.

Kinds:
    continuous   real numbers: mode-specific normalisation (Xu et al. 2019, Sec. 4.2)
    integer      whole numbers: as continuous, then rounded
    categorical  a finite set of values (strings, or numbers with few distinct values): one-hot
    boolean      True/False: one-hot of two
    datetime     timestamps: as continuous seconds, rounded back to the resolution seen
    id           unique keys (all values distinct): not learned; fresh unique keys are generated

Missing values are modelled, not dropped: a column with NaN gets a "missing" category (or mode).
The pandas dtype of every column is kept so the generated table has the input's dtypes.

An override file names columns and the fields to change, e.g. (YAML)::

    columns:
      zip: categorical            # shorthand for {kind: categorical}
      age: {kind: integer, min: 0, max: 120}
      score: {clip: false}        # allow values outside the range seen in training
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import load_file
from ..errors import DataError, suggest

KINDS = ("continuous", "integer", "categorical", "boolean", "datetime", "id")
CATEGORICAL_MAX_UNIQUE = 10  # numeric columns with at most this many values (each seen twice) are categories
ID_MIN_ROWS = 20  # all-distinct columns shorter than this are not called IDs (every tiny column is distinct)
ID_NAME = re.compile(r"(^|[_\W])(id|uuid|key)$|^id[_\W]", re.IGNORECASE)


@dataclass
class ColumnSchema:
    name: str
    kind: str  # one of KINDS
    dtype: str = "object"  # pandas dtype to restore on output
    nullable: bool = False  # has missing values (modelled as their own category/mode)
    min: float | None = None  # lower bound of generated values (numeric kinds; datetime: datetime_seconds)
    max: float | None = None  # upper bound
    clip: bool = True  # keep generated values within [min, max]
    decimals: int | None = None  # round generated values to this many decimals (None: no rounding)
    format: str | None = None  # strftime format of datetime columns read as text (UTC offset as literal text)
    unit: float = 1.0  # datetime resolution in seconds (86400 = whole days)
    levels: list[Any] | None = None  # pandas categorical dtype: its categories, in order (unused ones too)
    fraction_digits: int | None = None  # datetime text with %f: the digits written (3 for milliseconds)
    ordered: bool = False  # pandas categorical dtype: ordered

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnSchema:
        return cls(**d)


@dataclass
class Schema:
    columns: list[ColumnSchema]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def __getitem__(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise DataError(
            f"unknown column {name!r}{suggest(name, self.names)}; columns: {', '.join(self.names)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        return cls([ColumnSchema.from_dict(c) for c in d["columns"]])


# --- inference -------------------------------------------------------------------------------------


def infer_schema(df: pd.DataFrame, overrides: dict[str, Any] | str | Path | None = None) -> Schema:
    """One ColumnSchema per column of `df`, then the user's overrides applied and checked."""
    if df.shape[1] == 0:
        raise DataError("the table has no columns")
    if df.shape[0] == 0:
        raise DataError("the table has no rows")
    if not df.columns.is_unique:
        dup = df.columns[df.columns.duplicated()][0]
        raise DataError(f"column {dup!r} appears twice")
    user = load_overrides(overrides)
    names = {str(c) for c in df.columns}
    user = {str(k) if not isinstance(k, str) and str(k) in names else k: v for k, v in user.items()}  # 2020:
    unknown = [k for k in user if k not in df.columns]
    if unknown:
        key = unknown[0]
        hint = (
            " (YAML reads unquoted yes/no/on/off/null and numbers as non-text: quote the column name)"
            if not isinstance(key, str)
            else ""
        )
        raise DataError(
            f"schema override names unknown column {key!r}{suggest(str(key), [str(c) for c in df.columns])}{hint}"
        )
    columns = []
    for name in df.columns:
        forced = user.get(name, {}).get("kind")
        col = infer_column(str(name), df[name], forced)
        for key, value in user.get(name, {}).items():
            if key != "kind":
                setattr(col, key, value)
        if col.min is not None and col.max is not None and col.min > col.max:  # one bound set, one seen
            seen = "max" if "min" in user.get(name, {}) else "min"
            raise DataError(
                f"schema override for column {name!r}: min ({col.min:g}) is above max ({col.max:g}); "
                f"the {seen} is the data's {'largest' if seen == 'max' else 'smallest'} value, set {seen} too"
            )
        columns.append(col)
    return Schema(columns)


def load_overrides(overrides: dict[str, Any] | str | Path | None) -> dict[str, dict[str, Any]]:
    """{column: {field: value}} from a dict or a JSON/YAML file (`columns:` mapping), checked."""
    if overrides is None:
        return {}
    if isinstance(overrides, (str, Path)):
        data = load_file(overrides)
    else:
        data = dict(overrides)
    cols = data.get("columns", data) if isinstance(data, dict) else None
    if not isinstance(cols, dict):
        raise DataError("a schema override maps column names to a kind or to {field: value}")
    fields = [f.name for f in dataclasses.fields(ColumnSchema) if f.name not in ("name", "dtype", "nullable")]
    out: dict[str, dict[str, Any]] = {}
    for name, spec in cols.items():
        if isinstance(spec, str):
            spec = {"kind": spec}
        if not isinstance(spec, dict):
            raise DataError(
                f"schema override for column {name!r}: expected a kind or a mapping, got {spec!r}"
            )
        for key in spec:
            if key not in fields:
                raise DataError(
                    f"schema override for column {name!r}: unknown field {key!r}{suggest(str(key), fields)}; "
                    f"fields: {', '.join(fields)}"
                )
        if "kind" in spec and spec["kind"] not in KINDS:
            raise DataError(
                f"schema override for column {name!r}: unknown kind {spec['kind']!r}"
                f"{suggest(str(spec['kind']), KINDS)}; kinds: {', '.join(KINDS)}"
            )
        out[name] = spec = dict(spec)  # a copy: check_values normalises it
        check_values(name, spec)
    return out


def check_values(name: Any, spec: dict[str, Any]) -> None:
    """DataError naming the column and field of an override value of the wrong type or range: it
    would otherwise pass the fit and break (or silently skew) sampling."""

    def fail(msg: str) -> DataError:
        return DataError(f"schema override for column {name!r}: {msg}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))

    for key in ("min", "max", "unit"):
        if spec.get(key) is not None and not number(spec[key]):
            raise fail(f"{key} must be a number, got {spec[key]!r}")
    if spec.get("unit") is not None and spec["unit"] < 0:
        raise fail(f"unit must be >= 0 seconds, got {spec['unit']!r}")
    d = spec.get("decimals")
    if d is not None and not (number(d) and d >= 0 and float(d).is_integer()):
        raise fail(f"decimals must be a whole number >= 0, got {d!r}")
    if d is not None:
        spec["decimals"] = int(d)  # 2.0 from a YAML file: np.round needs an int
    if "clip" in spec and not isinstance(spec["clip"], bool):
        raise fail(f"clip must be true or false, got {spec['clip']!r}")
    if spec.get("format") is not None and not isinstance(spec["format"], str):
        raise fail(f"format must be text, got {spec['format']!r}")
    if spec.get("min") is not None and spec.get("max") is not None and spec["min"] > spec["max"]:
        raise fail(f"min ({spec['min']}) is above max ({spec['max']})")


def infer_column(name: str, s: pd.Series, kind: str | None = None) -> ColumnSchema:
    """Infer one column's kind (unless `kind` is forced) and the facts the transformer needs."""
    col = ColumnSchema(name=name, kind="categorical", dtype=str(s.dtype), nullable=bool(s.isna().any()))
    if isinstance(s.dtype, pd.CategoricalDtype):  # restored with its categories and their order
        levels = [v.item() if isinstance(v, np.generic) else v for v in s.dtype.categories]
        if all(isinstance(v, (str, int, float, bool)) for v in levels):  # JSON can keep them
            col.levels, col.ordered = levels, bool(s.dtype.ordered)
    nonnull = s.dropna()
    fmt = None
    if kind in (None, "datetime") and not pd.api.types.is_datetime64_any_dtype(s) and _is_text(s):
        fmt = _datetime_format(nonnull)
        if kind == "datetime" and fmt is None and len(nonnull):
            raise DataError(f"column {name!r} is declared datetime but its values do not parse as dates")
    if kind is None:
        kind = _infer_kind(name, s, nonnull, fmt)
    col.kind = kind
    if kind == "datetime":
        col.format = fmt
        if fmt and "%f" in fmt:  # "12:00:52.126": %f would write 6 digits back
            digits = nonnull.astype(str).str.extract(r"\d[.,](\d{1,9})", expand=False).str.len()
            col.fraction_digits = int(digits.max()) if digits.notna().any() else None
        seconds = datetime_seconds(s, fmt)
        finite = seconds[~np.isnan(seconds)]
        if len(finite):
            col.min, col.max = float(finite.min()), float(finite.max())
            col.unit = _datetime_unit(finite)
    elif kind in ("continuous", "integer"):
        values = pd.to_numeric(nonnull, errors="coerce")
        if values.isna().any():
            bad = nonnull[values.isna()].iloc[0]
            raise DataError(f"column {name!r} is declared {kind} but holds the non-number {bad!r}")
        values = values.to_numpy(dtype=np.float64)
        if len(values):
            col.min, col.max = float(values.min()), float(values.max())
        col.decimals = 0 if kind == "integer" else _decimals(values)
    return col


def _is_text(s: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)


def _infer_kind(name: str, s: pd.Series, nonnull: pd.Series, datetime_fmt: str | None) -> str:
    n = len(nonnull)
    if pd.api.types.is_bool_dtype(s) or (n and nonnull.map(type).isin([bool, np.bool_]).all()):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s) or datetime_fmt is not None:
        return "datetime"
    if isinstance(s.dtype, pd.CategoricalDtype):
        return "categorical"
    n_unique = nonnull.nunique()
    if pd.api.types.is_numeric_dtype(s):
        values = nonnull.to_numpy(dtype=np.float64)
        integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
        if integral and n_unique == n >= ID_MIN_ROWS:
            ordered = np.sort(values)
            if ID_NAME.search(name) or np.all(np.diff(ordered) == 1):
                return "id"
        if n_unique <= CATEGORICAL_MAX_UNIQUE and 2 * n_unique <= n:
            return "categorical"
        return "integer" if integral else "continuous"
    if n_unique == n >= ID_MIN_ROWS:
        return "id"
    return "categorical"


OFFSET = re.compile(r"(Z|[+-]\d{2}:?\d{2})$")  # a UTC offset at the end of a timestamp text or format


def _datetime_format(nonnull: pd.Series) -> str | None:
    """The strftime format of text dates, when every value parses with it; else None.

    A UTC offset (%z) becomes literal text in the format, so that written timestamps carry one:
    the values' own offset when they all share it (e.g. "+02:00" or "Z", kept exactly), else
    "+00:00" (offsets that vary, e.g. with daylight saving time: written as UTC)."""
    from pandas.tseries.api import guess_datetime_format

    if not len(nonnull) or not isinstance(nonnull.iloc[0], str):  # bytes, numbers, ...: not text dates
        return None
    try:
        text = nonnull.astype(str)
    except (UnicodeDecodeError, ValueError, TypeError):
        return None
    first = text.iloc[0]
    if not re.search(r"\d{1,4}[-/.:]\d{1,2}", first):  # not a date-like string ("12", "1.5", "abc")
        return None
    with warnings.catch_warnings():  # "Parsing dates in %d/%m/%Y format when dayfirst=False ..."
        warnings.simplefilter("ignore")
        # "05/03/2022" reads both ways: the first format every value parses with wins.
        guesses = dict.fromkeys(guess_datetime_format(first, dayfirst=d) for d in (False, True))
    fmt = next(
        (
            f
            for f in guesses
            if f is not None and pd.to_datetime(text, format=f, errors="coerce", utc=True).notna().all()
        ),
        None,
    )
    if fmt is None:
        return None
    if fmt.endswith("%z"):
        offsets = text.str.extract(OFFSET, expand=False)
        shared = offsets.iloc[0] if offsets.notna().all() and offsets.nunique() == 1 else None
        if shared is None:
            shared = "+00:00" if offsets.str.contains(":", na=False).any() else "+0000"
        fmt = fmt[:-2] + shared
    return fmt


def datetime_seconds(s: pd.Series, fmt: str | None) -> np.ndarray:
    """Seconds since the epoch (UTC) as float64, NaN where missing.

    A format ending in a literal offset (see `_datetime_format`) reads any offset and gives the
    seconds of the wall-clock time in that offset, which is what strftime with that format writes."""
    shift = 0.0
    if not pd.api.types.is_datetime64_any_dtype(s):
        text = s.astype("object").where(s.notna(), None)
        m = OFFSET.search(fmt or "")
        if m and not fmt[: m.start()].endswith("%"):  # a literal offset, not %Z
            fmt = fmt[: m.start()] + "%z"
            if m.group() != "Z":
                sign, digits = (-1 if m.group()[0] == "-" else 1), m.group()[1:].replace(":", "")
                shift = sign * (3600.0 * int(digits[:2]) + 60.0 * int(digits[2:]))
        s = pd.to_datetime(text, format=fmt, errors="coerce", utc=True)  # utc: offsets may vary
    if getattr(s.dt, "tz", None) is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = s.astype("datetime64[ns]").to_numpy().astype("int64").astype(np.float64)
    ns[s.isna().to_numpy()] = np.nan
    return ns / 1e9 + shift


def _datetime_unit(seconds: np.ndarray) -> float:
    """The coarsest of day / hour / minute / second / none that every timestamp is a multiple of."""
    for unit in (86400.0, 3600.0, 60.0, 1.0):
        if np.all(np.mod(seconds, unit) == 0):
            return unit
    return 0.0


def _decimals(values: np.ndarray, most: int = 6) -> int | None:
    """Fewest decimals (<= `most`) that reproduce every value, e.g. 2 for prices in cents."""
    values = values[np.isfinite(values)]
    # Float noise, relative to each value: float64's (0.1 + 0.2 = 0.30000000000000004) or float32's
    # (a Parquet float32 1.1 is 1.100000023841858). Relative, so that 5e-8 is not "0 decimals".
    noise = np.maximum(4 * np.spacing(np.abs(values)), 1.2e-7 * np.abs(values))
    for d in range(most + 1):
        if np.all(np.abs(np.round(values, d) - values) <= noise):
            return d
    return None
