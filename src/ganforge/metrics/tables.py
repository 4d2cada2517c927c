"""Features of tables for the distribution metrics (FID, KID, precision/recall, density/coverage):
every row becomes one numeric vector of encoded columns.

The encoding is fitted on the reference (real) table and applied unchanged to both tables, so the
two sets of rows live in the same space:

- numeric columns (continuous, integer, and datetime as epoch seconds) are standardised with
  the reference's mean and standard deviation, (v - mean) / std (std 1 when the column is
  constant); a missing value becomes 0 (the mean) and, when the reference has missing values in
  that column, a 0/1 "missing" indicator follows it;
- categorical and boolean columns are one-hot over the reference's `max_categories` most
  frequent values (a missing value is a value of its own), plus one "other" slot for the rest and
  for values the reference never had;
- id columns are left out: fresh unique keys carry no distribution.

A one-hot is plain 0/1, so a differing category moves a row by sqrt(2), about 1.4 standard
deviations of a numeric column. The features are the same kind of input the points extractor
gives the metrics: the data's own coordinates, only made numeric and comparable in scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import DataError
from ..tabular.schema import ColumnSchema, Schema
from ..tabular.transformer import numeric_values

NUMERIC = ("continuous", "integer", "datetime")
MAX_CATEGORIES = 50  # one-hot slots per categorical column (the most frequent values; the rest share "other")


@dataclass
class _Numeric:
    col: ColumnSchema
    mean: float
    std: float
    missing: bool  # the reference has missing values: append an indicator


@dataclass
class _Categorical:
    col: ColumnSchema
    values: pd.Index  # the reference's most frequent values, in slot order


class TableEncoder:
    """Rows of a table -> (N, D) float32 features, fitted on `reference` (module docstring)."""

    def __init__(self, schema: Schema, reference: pd.DataFrame, max_categories: int = MAX_CATEGORIES) -> None:
        check_columns(schema, reference, "the reference table")
        self.schema = schema
        self.blocks: list[_Numeric | _Categorical] = []
        self.names: list[str] = []  # one per feature, e.g. "age", "age:missing", "color=red", "color:other"
        for col in schema.columns:
            if col.kind == "id":
                continue
            if col.kind in NUMERIC:
                v = numeric_values(col, reference[col.name])
                ok = v[~np.isnan(v)]
                std = float(ok.std()) if ok.size else 0.0
                block = _Numeric(
                    col, float(ok.mean()) if ok.size else 0.0, std if std > 0 else 1.0, bool(ok.size < v.size)
                )
                self.blocks.append(block)
                self.names += [col.name, f"{col.name}:missing"] if block.missing else [col.name]
            else:
                counts = reference[col.name].astype(object).value_counts(dropna=False)
                values = pd.Index(list(counts.index[:max_categories]), dtype=object)
                self.blocks.append(_Categorical(col, values))
                self.names += [f"{col.name}={v}" for v in values] + [f"{col.name}:other"]

    @property
    def width(self) -> int:
        return len(self.names)

    def __call__(self, df: pd.DataFrame) -> Tensor:
        check_columns(self.schema, df, "the table")
        parts: list[np.ndarray] = []
        for block in self.blocks:
            s = df[block.col.name]
            if isinstance(block, _Numeric):
                v = numeric_values(block.col, s)
                parts.append(np.nan_to_num((v - block.mean) / block.std, nan=0.0)[:, None])
                if block.missing:
                    parts.append(np.isnan(v).astype(np.float64)[:, None])
            else:
                idx = block.values.get_indexer(s.astype(object))  # -1: not among the reference's values
                onehot = np.zeros((len(df), len(block.values) + 1))
                onehot[np.arange(len(df)), np.where(idx < 0, len(block.values), idx)] = 1.0
                parts.append(onehot)
        x = np.concatenate(parts, axis=1) if parts else np.zeros((len(df), 0))
        return torch.from_numpy(x).float()  # (N, D)


def check_columns(schema: Schema, df: pd.DataFrame, what: str) -> None:
    missing = [c.name for c in schema.columns if c.kind != "id" and c.name not in df.columns]
    if missing:
        raise DataError(f"{what} lacks the model's column(s) {', '.join(map(repr, missing))}")
