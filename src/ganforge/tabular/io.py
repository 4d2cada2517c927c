"""Reading and writing tables: CSV (any common delimiter, a chosen encoding) and Parquet.

Problems a user can fix come back as one-line :class:`DataError`s: a missing or empty file, a
header without rows, bytes that are not in the expected encoding (with the offset and a hint),
a delimiter that splits nothing (the header still holds `;`, a tab or `|`), ragged rows.
Writes are atomic: a failed write leaves no half-written file.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..engine.checkpoint import atomic_write
from ..errors import DataError

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
DELIMITERS = ",;\t|"


@dataclass
class TableSource:
    """How a table was stored, so generated tables can be written the same way."""

    format: str = "csv"  # "csv" | "parquet"
    delimiter: str = ","
    encoding: str = "utf-8"
    decimal: str = "."  # "," for files written with decimal commas (12,5), as much of Europe does
    blank: list[str] = field(default_factory=list)  # columns whose header was empty (pandas: "Unnamed: 0")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise DataError(
        f"{path}: unsupported table format {suffix or '(no extension)'}; "
        f"use {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def read_table(
    path: str | Path, delimiter: str | None = None, encoding: str = "utf-8"
) -> tuple[pd.DataFrame, TableSource]:
    """(DataFrame, how it was stored). `delimiter=None` detects one of , ; tab |."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"table not found: {path}")
    fmt = table_format(path)
    if fmt == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises many types for a corrupt file
            raise DataError(f"{path} is not a readable Parquet file: {str(err).splitlines()[0]}") from None
        _check_not_empty(df, path)
        return df, TableSource("parquet")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path} is empty")
    codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: byte 0x{raw[err.start]:02x} on line {line} is not valid {encoding}; "
            "give the file's encoding (e.g. encoding='latin-1', CLI --encoding latin-1)"
        ) from None
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}") from None
    if delimiter is None:
        delimiter = sniff_delimiter(text, default="\t" if path.suffix.lower() == ".tsv" else ",")
    delimiter = {"\\t": "\t", "tab": "\t"}.get(delimiter, delimiter)  # "\t" typed on a command line
    if len(delimiter) != 1:
        raise DataError(f"the delimiter must be one character (or \\t for a tab), got {delimiter!r}")
    try:
        df = pd.read_csv(io.StringIO(text), sep=delimiter)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} holds no table") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(
            f"{path}: cannot parse with delimiter {delimiter!r}: {str(err).strip().splitlines()[-1]}"
        ) from None
    decimal = "."
    if delimiter != "," and _has_decimal_commas(df):  # "12,5" in a ;-separated file: a number
        thousands = "." if any(_thousands_dots(df[c]) for c in _text_columns(df)) else None
        df = pd.read_csv(io.StringIO(text), sep=delimiter, decimal=",", thousands=thousands)
        decimal = ","
    _keep_leading_zeros(df, text, delimiter)
    header = text.splitlines()[0] if text.strip() else ""
    names = next(csv.reader([header], delimiter=delimiter), [])
    blank = [str(c) for c, n in zip(df.columns, names) if not n.strip() and str(c).startswith("Unnamed: ")]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:  # pandas would rename the second one to "name.1": the samples' header would differ
        raise DataError(f"{path}: column {repeated[0]!r} appears twice in the header; rename one")
    if df.shape[1] == 1:
        others = [d for d in DELIMITERS if d != delimiter and d in header]
        if others:
            raise DataError(
                f"{path}: the delimiter {delimiter!r} leaves one column, but the header holds {others[0]!r}; "
                f"wrong delimiter? (pass delimiter={others[0]!r}, CLI --delimiter)"
            )
    _check_not_empty(df, path)
    return df, TableSource("csv", delimiter, encoding, decimal, blank)


def sniff_delimiter(text: str, default: str = ",") -> str:
    """The delimiter among , ; tab | that splits the first lines consistently, else `default`."""
    sample = "\n".join(text.splitlines()[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return default


def _check_not_empty(df: pd.DataFrame, path: Path) -> None:
    if df.shape[1] == 0:
        raise DataError(f"{path} holds no columns")
    if df.shape[0] == 0:
        raise DataError(f"{path} has a header but no rows")


DECIMAL_COMMA = re.compile(r"\s*[-+]?(\d+|\d{1,3}(\.\d{3})+)(,\d+)?\s*")  # 12 / -0,25 / 1.234,56


def _text_columns(df: pd.DataFrame) -> list[Any]:
    return [
        c for c in df.columns if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c])
    ]


def _column_matches(s: pd.Series, pattern: re.Pattern[str]) -> bool:
    values = s.dropna().astype(str)
    return len(values) > 0 and bool(values.str.fullmatch(pattern).all())


def _has_decimal_commas(df: pd.DataFrame) -> bool:
    """A text column all of whose values are numbers with a decimal comma (at least one)."""
    for c in _text_columns(df):
        values = df[c].dropna().astype(str)
        if values.str.contains(",", regex=False).any() and _column_matches(values, DECIMAL_COMMA):
            return True
    return False


def _thousands_dots(s: pd.Series) -> bool:
    """A decimal-comma column that groups thousands with dots (1.234,56)."""
    return _column_matches(s, DECIMAL_COMMA) and bool(s.dropna().astype(str).str.contains(r"\d\.\d{3}").any())


def _keep_leading_zeros(df: pd.DataFrame, text: str, delimiter: str) -> None:
    """Numeric columns written with leading zeros ("01234", "007": zip codes, product codes) are
    text: read as numbers they would lose their zeros. Re-read those columns as text, in place."""
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].dtype != bool]
    if not numeric or not re.search(r"(^|[\s" + re.escape(delimiter) + r'"])[-+]?0\d', text):
        return
    raw = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, usecols=numeric)
    for name in numeric:
        if raw[name].str.match(r"\s*[-+]?0\d").any():
            df[name] = raw[name]


def write_table(df: pd.DataFrame, path: str | Path, source: TableSource | None = None) -> Path:
    """Write `df` to .csv/.tsv/.txt or .parquet, atomically; CSV uses `source`'s delimiter/encoding."""
    path = Path(path)
    fmt = table_format(path)
    if fmt == "parquet":
        atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
        return path
    src = source if source is not None and source.format == "csv" else TableSource()
    sep = "\t" if path.suffix.lower() == ".tsv" else src.delimiter
    out = df.rename(columns={c: "" for c in src.blank if c in df.columns})  # empty headers stay empty
    atomic_write(
        path, lambda tmp: out.to_csv(tmp, index=False, sep=sep, encoding=src.encoding, decimal=src.decimal)
    )
    return path
