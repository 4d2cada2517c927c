"""Reports, schemas and text timestamps on awkward input: a collapsed or empty target, a synthetic
column of the wrong type, timestamps with UTC offsets, bad schema override values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ganforge.cli import main
from ganforge.errors import DataError
from ganforge.tabular import TableTransformer, infer_schema
from ganforge.tabular.report import evaluate, write_report
from ganforge.tabular.schema import datetime_seconds

from .test_tabular import mixed

# --- utility with a collapsed or empty target ----------------------------------------------------------


def test_report_when_synthetic_target_has_one_class(tmp_path):
    real = mixed(200)
    train, hold = real.iloc[:150], real.iloc[150:]
    synth = train.copy()
    synth["member"] = True  # mode collapse: the synthetic table holds one class of a binary target
    rep = evaluate(train, synth, holdout=hold, target="member")
    u = rep["utility"]
    assert set(u["real"]) == set(u["synthetic"]) == {"accuracy", "macro_f1", "roc_auc"}
    assert u["real"]["roc_auc"] is not None and u["synthetic"]["roc_auc"] is None
    assert u["synthetic"]["accuracy"] == pytest.approx((hold["member"]).mean())  # always predicts True
    assert any("synthetic training rows hold one class of 'member' (True)" in n for n in u["notes"])
    page = write_report(rep, tmp_path / "r.html", train, synth).read_text(encoding="utf-8")
    assert "hold one class of &#x27;member&#x27;" in page and "Utility" in page
    back = json.loads(write_report(rep, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert back["utility"] == u


def test_report_boolean_target_with_blanks_and_all_missing(tmp_path, capsys):
    real = mixed(200)
    real["member"] = real["member"].astype(object)
    real.loc[::7, "member"] = None
    synth = real.copy()
    synth.loc[synth["member"].notna(), "member"] = False
    real.to_csv(tmp_path / "real.csv", index=False)
    synth.to_csv(tmp_path / "synth.csv", index=False)
    cmd = ["tabular", "report", str(tmp_path / "real.csv"), str(tmp_path / "synth.csv"), "--target", "member"]
    assert main([*cmd, "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json")]) == 0
    u = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["utility"]
    assert u["synthetic"]["roc_auc"] is None and "one class of 'member' (False)" in " ".join(u["notes"])
    # A synthetic table without any target value: no scores, said in the notes, no crash.
    synth["member"] = None
    rep = evaluate(real, synth, target="member")
    assert rep["utility"]["synthetic"] == {"accuracy": None, "macro_f1": None, "roc_auc": None}
    assert rep["utility"]["ratio"] is None and rep["summary"]["utility_ratio"] is None
    assert "no values of 'member'" in " ".join(rep["utility"]["notes"])
    # A target with no values in the real table is unusable: one line naming it, exit 2.
    real["member"] = None
    real.to_csv(tmp_path / "real.csv", index=False)
    capsys.readouterr()
    assert main([*cmd, "--out", str(tmp_path / "r2.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ganforge: error: target 'member' has no values in the real table; choose a column to predict"
    ]
    assert not (tmp_path / "r2.html").exists()
    with pytest.raises(DataError, match="target 'score' has no values in the hold-out table"):
        hold = mixed(50)
        hold["score"] = np.nan
        evaluate(mixed(100), mixed(100, seed=1), holdout=hold, target="score")


# --- a synthetic column of the wrong type ---------------------------------------------------------------


def test_report_names_a_synthetic_column_of_the_wrong_type(tmp_path, capsys):
    real = mixed(100)
    synth = real.copy()
    synth["age"] = synth["age"].astype(str) + "y"  # integer in the real table, text here
    for target in (None, "member", "age"):  # without a target the column's score was silently 0
        with pytest.raises(
            DataError, match=r"^synthetic column 'age' is not numeric like the real one: 100 of"
        ):
            evaluate(real, synth, target=target)
    hold = mixed(30, seed=1)
    hold["joined"] = hold["joined"].astype(str).str.replace("-", ".")
    real["joined"] = real["joined"].astype(str)  # dates as text, format %Y-%m-%d
    with pytest.raises(DataError, match=r"hold-out column 'joined' is not a date in the format %Y-%m-%d"):
        evaluate(real, real, holdout=hold)
    synth = real.copy()
    synth.loc[::10, "price"] = None  # missing values are fine
    assert evaluate(real, synth)["fidelity"]["columns"]["price"]["score"] > 0.8
    real.to_csv(tmp_path / "real.csv", index=False)
    synth["price"] = "unknown"
    synth.to_csv(tmp_path / "synth.csv", index=False)
    capsys.readouterr()
    out = tmp_path / "r.html"
    assert (
        main(
            ["tabular", "report", str(tmp_path / "real.csv"), str(tmp_path / "synth.csv"), "--out", str(out)]
        )
        == 2
    )
    assert capsys.readouterr().err.startswith("ganforge: error: synthetic column 'price' is not numeric")
    assert not out.exists()


# --- text timestamps with UTC offsets ----------------------------------------------------------------------


def stamped(texts: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=len(texts)), "ts": texts})


def hours(n: int = 60) -> pd.DatetimeIndex:
    rng = np.random.default_rng(1)
    return pd.Timestamp("2021-01-01") + pd.to_timedelta(np.sort(rng.integers(0, 365 * 24, n)), unit="h")


def test_timestamps_with_daylight_saving_offsets(tmp_path, capsys):
    local = hours().tz_localize("Europe/Berlin")
    df = stamped([t.isoformat() for t in local])
    assert {t[-6:] for t in df["ts"]} == {"+01:00", "+02:00"}
    col = infer_schema(df)["ts"]
    assert col.kind == "datetime" and col.format == "%Y-%m-%dT%H:%M:%S+00:00"
    truth = local.tz_convert("UTC").tz_localize(None).astype("datetime64[ns]").asi8 / 1e9
    np.testing.assert_array_equal(datetime_seconds(df["ts"], col.format), truth)
    tr = TableTransformer(infer_schema(df)).fit(df)
    back = tr.inverse(tr.transform(df))["ts"]  # the same instants, written in UTC
    assert back.str.endswith("+00:00").all()
    assert (pd.to_datetime(back, utc=True) == local.tz_convert("UTC")).all()
    df.to_csv(tmp_path / "t.csv", index=False)
    capsys.readouterr()
    assert main(["tabular", "schema", str(tmp_path / "t.csv")]) == 0
    assert "kind: datetime" in capsys.readouterr().out


@pytest.mark.parametrize("offset", ["+02:00", "-0530", "Z"])
def test_timestamps_with_one_offset_keep_it(offset):
    df = stamped([t.isoformat() + offset for t in hours()])
    col = infer_schema(df)["ts"]
    assert col.format == "%Y-%m-%dT%H:%M:%S" + offset and col.unit == 3600.0
    tr = TableTransformer(infer_schema(df)).fit(df)
    pd.testing.assert_series_equal(tr.inverse(tr.transform(df))["ts"], df["ts"])  # text, offset and all
    # Another offset for the same instants reads as the same wall-clock time in the column's offset.
    utc = pd.to_datetime(df["ts"], utc=True)
    np.testing.assert_array_equal(
        datetime_seconds(utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ"), col.format),
        datetime_seconds(df["ts"], col.format),
    )


# --- schema override values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"min": "0"}, "min must be a number, got '0'"),
        ({"max": True}, "max must be a number, got True"),
        ({"decimals": "2"}, "decimals must be a whole number >= 0, got '2'"),
        ({"decimals": 1.5}, "decimals must be a whole number >= 0, got 1.5"),
        ({"decimals": -1}, "decimals must be a whole number >= 0, got -1"),
        ({"min": 100, "max": 10}, r"min \(100\) is above max \(10\)"),
        ({"min": 100}, r"min \(100\) is above max \(89\); the max is the data's largest value, set max too"),
        ({"clip": "no"}, "clip must be true or false, got 'no'"),
        ({"unit": -60}, "unit must be >= 0 seconds"),
    ],
)
def test_schema_override_values_are_checked(spec, message):
    with pytest.raises(DataError, match=r"^schema override for column 'age': " + message):
        infer_schema(mixed(), {"age": spec})


def test_schema_override_file_with_a_bad_value_is_one_line(tmp_path, capsys):
    mixed(60).to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.yaml").write_text("columns:\n  price: {decimals: '2'}\n", encoding="utf-8")
    capsys.readouterr()
    cmd = [
        "tabular",
        "fit",
        str(tmp_path / "t.csv"),
        "--schema",
        str(tmp_path / "s.yaml"),
        "--out",
        str(tmp_path / "m"),
    ]
    assert main([*cmd, "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ganforge: error: schema override for column 'price': decimals must be a whole number >= 0, got '2'"
    ]
    # Good values still apply; 2.0 from a file is the whole number 2.
    user = {"age": {"min": 0, "max": 120.5}, "price": {"decimals": 2.0, "clip": False}}
    schema = infer_schema(mixed(), user)
    assert (schema["age"].min, schema["age"].max) == (0, 120.5)
    assert (
        schema["price"].decimals == 2
        and isinstance(schema["price"].decimals, int)
        and not schema["price"].clip
    )
    assert user["price"]["decimals"] == 2.0 and isinstance(user["price"]["decimals"], float)  # not changed
