"""Reports, schemas and text timestamps on awkward input: a collapsed or empty target, a synthetic
column of the wrong type, timestamps with UTC offsets, bad schema override values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganforge.cli import main
from ganforge.errors import DataError
from ganforge.tabular.report import evaluate, write_report

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
