"""Awkward tables and model folders: each gets one clear error (or the right output), nothing half-written."""

from __future__ import annotations

import decimal
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from ganforge.cli import main
from ganforge.errors import CheckpointError, ConfigError, DataError
from ganforge.tabular import TabularGAN

from .test_tabular import TINY, mixed, tiny


def test_infinite_and_overflowing_numbers_are_named():
    rng = np.random.default_rng(0)
    cat = ["x", "y"] * 20
    with pytest.raises(DataError, match="column 'a' has 2 infinite values"):
        tiny().fit(pd.DataFrame({"a": np.r_[rng.normal(size=38), [np.inf, -np.inf]], "c": cat}))
    with pytest.raises(DataError, match="column 'a' has values too large to encode"):
        tiny().fit(pd.DataFrame({"a": np.linspace(1e300, 1e305, 40), "c": cat}))


def test_column_names_and_nested_values_are_checked():
    with pytest.raises(DataError, match="column names must be text, got 0 \\(int\\)"):
        tiny().fit(pd.DataFrame(np.random.default_rng(0).normal(size=(40, 2))))
    with pytest.raises(DataError, match="multi-level column names"):
        tiny().fit(pd.DataFrame([[1, 2]] * 40, columns=pd.MultiIndex.from_tuples([("a", "x"), ("a", "y")])))
    with pytest.raises(DataError, match="column 'a' appears twice"):
        tiny().fit(pd.DataFrame([[1, 2, "u"]] * 40, columns=["a", "a", "b"]))
    with pytest.raises(DataError, match="column 'l' holds lists or arrays"):
        tiny().fit(pd.DataFrame({"l": [[1, 2]] * 40, "c": ["x", "y"] * 20}))


def test_values_json_cannot_hold_are_stored_as_their_json_form(tmp_path):
    df = pd.DataFrame(
        {
            "raw": [b"ab", b"c\xff"] * 20,
            "price": [decimal.Decimal("1.25"), decimal.Decimal("2.50")] * 20,
            "n": np.arange(40.0),
        }
    )
    model = tiny().fit(df)
    model.save(tmp_path / "m")
    out = TabularGAN.load(tmp_path / "m").sample(40)
    assert set(out["raw"]) <= {"ab", "c\\xff"} and set(out["price"]) <= {1.25, 2.5}


def test_bad_seed_n_and_epsilon_are_refused():
    with pytest.raises(ConfigError, match="seed must be a whole number in \\[0, 2\\^63\\), got -1"):
        TabularGAN(seed=-1)
    with pytest.raises(ConfigError, match="steps must be a whole number of at least 1, got 2.5"):
        TabularGAN(steps=2.5)
    with pytest.raises(ConfigError, match="dp_epsilon must be a positive finite number"):
        TabularGAN(dp_epsilon=float("inf"))
    with pytest.raises(ConfigError, match="d_lr must be a positive finite number, got nan"):
        TabularGAN(d_lr=float("nan"))
    with pytest.raises(ConfigError, match="lr_decay must be none, linear or cosine, got 'step'"):
        TabularGAN(lr_decay="step")
    model = tiny().fit(mixed())
    with pytest.raises(ConfigError, match="n must be a whole number of at least 1, got 2.5"):
        model.sample(2.5)
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        model.sample(3, seed=10**30)


def test_malformed_model_folders_give_one_line(tmp_path):
    tiny().fit(mixed()).save(tmp_path / "good")
    info = json.loads((tmp_path / "good" / "tabular.json").read_text())

    def broken(name: str, change) -> str:
        folder = tmp_path / name
        shutil.copytree(tmp_path / "good", folder)
        doc = json.loads(json.dumps(info))
        doc = change(doc) or doc
        (folder / "tabular.json").write_text(json.dumps(doc))
        return str(folder)

    cases = {
        "no_params": (lambda d: d.pop("params") and None, "malformed \\(KeyError"),
        "no_transformer": (lambda d: d.pop("transformer") and None, "malformed \\(KeyError"),
        "a_list": (lambda d: [1, 2], "unknown format 'list'"),
        "extra_param": (lambda d: d["params"].update(colour=1), "malformed \\(TypeError"),
        "no_model": (lambda d: d.update(has_model=False), "says it has no model"),
        "codec_gone": (lambda d: d["transformer"]["codecs"].pop() and None, "do not match its schema"),
    }
    for name, (change, message) in cases.items():
        with pytest.raises(CheckpointError, match=message):
            TabularGAN.load(broken(name, change))
    # The training log is diagnostics only: a garbage line is skipped, sampling still works.
    (tmp_path / "good" / "stats.jsonl").write_text("{not json\n")
    assert len(TabularGAN.load(tmp_path / "good").sample(5)) == 5


def test_cli_output_paths_and_delimiters(tmp_path, capsys):
    df = mixed(60)
    df.to_csv(tmp_path / "t.tsv.csv", sep="\t", index=False)
    run = tmp_path / "run"
    fit = ["tabular", "fit", str(tmp_path / "t.tsv.csv"), "--steps", "2", "--quiet"]
    fit += ["--batch-size", str(TINY["batch_size"]), "--pac", str(TINY["pac"])]
    assert main([*fit, "--out", str(run), "--delimiter", "\\t"]) == 0  # as typed in a shell
    capsys.readouterr()
    (tmp_path / "afile").write_text("")
    assert main([*fit, "--out", str(tmp_path / "afile" / "m"), "--delimiter", "\\t"]) == 2  # before training
    assert main([*fit, "--out", str(tmp_path / "r2"), "--delimiter", "ab"]) == 2
    assert not (tmp_path / "r2").exists()
    (tmp_path / "d.csv").mkdir()
    for out in (tmp_path / "d.csv", tmp_path / "afile" / "o.csv"):
        assert main(["tabular", "sample", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("ganforge: error: ") for line in err), err
    assert "not a directory" in err[0] and "one character" in err[1] and "is a directory" in err[2]
    # Whole numbers with blanks come back as whole numbers in a CSV, blanks kept.
    df = pd.DataFrame({"qty": [float(i) if i % 5 else np.nan for i in range(60)], "c": ["a", "b", "c"] * 20})
    df.to_csv(tmp_path / "q.csv", index=False)
    assert main(["tabular", "fit", str(tmp_path / "q.csv"), "--out", str(tmp_path / "q"), *fit[3:]]) == 0
    assert (
        main(["tabular", "sample", str(tmp_path / "q"), "--out", str(tmp_path / "s.csv"), "--n", "60"]) == 0
    )
    qty = [line.split(",")[0] for line in (tmp_path / "s.csv").read_text().splitlines()[1:]]
    assert all(q == "" or q.isdigit() for q in qty) and "" in qty


def test_decimals_are_the_fewest_that_reproduce_values_up_to_float_noise():
    from ganforge.tabular.schema import _decimals

    assert _decimals(np.array([1.25, 2.5, 3.0])) == 2
    assert _decimals(np.array([0.1 + 0.2, 7.0])) == 1  # float64 noise
    assert _decimals(np.array([1.1, 2.7], dtype=np.float32).astype(np.float64)) == 1  # float32 noise
    assert _decimals(np.array([3.0, -4.0, 0.0])) == 0
    tiny_values = np.random.default_rng(0).uniform(1e-9, 1e-7, 40)
    assert _decimals(tiny_values) is None  # not "0 decimals": they would all become 0.0
    assert _decimals(np.array([1e-300, 2e-300])) is None


def test_schema_keys_that_yaml_reads_as_numbers_or_booleans():
    from ganforge.tabular import infer_schema

    df = pd.DataFrame({"yes": [1, 2, 3], "2020": [1.5, 2.5, 3.5]})
    assert infer_schema(df, {"columns": {2020: {"kind": "categorical"}}})["2020"].kind == "categorical"
    with pytest.raises(DataError, match="unknown column True .*quote the column name"):
        infer_schema(df, {"columns": {True: {"kind": "categorical"}}})  # `yes:` unquoted


def test_numbers_written_with_leading_zeros_stay_text(tmp_path):
    from ganforge.tabular import read_table

    (tmp_path / "z.csv").write_text("zip;amount;n\n01234;0.5;7\n02110;-0.25;08\n10001;2;9\n")
    df, _ = read_table(tmp_path / "z.csv")
    assert df["zip"].tolist() == ["01234", "02110", "10001"] and df["n"].tolist() == ["7", "08", "9"]
    assert df["amount"].tolist() == [0.5, -0.25, 2.0]  # "0.5" is a number, not a code


def test_decimal_commas_are_numbers_and_are_written_back(tmp_path):
    from ganforge.tabular import read_table, write_table

    text = "a;price;big;code\nx;3,80;41.050,23;A1\ny;13,3;20.652,5;B2\nx;-0,25;999,5;C3\n"
    (tmp_path / "e.csv").write_text(text)
    df, source = read_table(tmp_path / "e.csv")
    assert df["price"].tolist() == [3.8, 13.3, -0.25] and df["big"].tolist() == [41050.23, 20652.5, 999.5]
    assert df["code"].tolist() == ["A1", "B2", "C3"] and source.decimal == ","
    write_table(df, tmp_path / "out.csv", source)
    assert (tmp_path / "out.csv").read_text().splitlines()[1] == "x;3,8;41050,23;A1"
    (tmp_path / "c.csv").write_text("a,b\n1,2\n3,4\n")  # a comma-separated file: commas delimit
    assert read_table(tmp_path / "c.csv")[1].decimal == "."


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    from ganforge.tabular import read_table

    (tmp_path / "d.csv").write_text("a,a,b\n1,2,x\n3,4,y\n")
    with pytest.raises(DataError, match="column 'a' appears twice in the header"):
        read_table(tmp_path / "d.csv")


def test_pandas_categoricals_come_back_with_their_categories_and_order(tmp_path):
    levels = ["lo", "mid", "hi", "unused"]
    df = pd.DataFrame(
        {"c": pd.Categorical(["lo", "mid", "hi"] * 20, categories=levels, ordered=True), "v": range(60)}
    )
    tiny().fit(df).save(tmp_path / "m")
    out = TabularGAN.load(tmp_path / "m").sample(30)
    assert out["c"].dtype == df["c"].dtype  # the same categories, in order, and ordered
    assert set(out["c"]) <= {"lo", "mid", "hi"}


def test_text_timestamps_keep_their_fraction_digits():
    rng = np.random.default_rng(0)
    t = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.integers(0, 10**9, 60), unit="ms")
    text = pd.Series(t.strftime("%Y-%m-%d %H:%M:%S.%f")).str[:-3]  # milliseconds: "...:04.225"
    text[3] = None
    df = pd.DataFrame({"t": text, "c": ["a", "b"] * 30})
    out = tiny().fit(df).sample(200)["t"].dropna()
    assert out.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}").all()


def test_empty_header_names_stay_empty(tmp_path):
    from ganforge.tabular import read_table, write_table

    pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": ["x", "y", "x"]}).to_csv(tmp_path / "i.csv")  # with the index
    assert (tmp_path / "i.csv").read_text().splitlines()[0] == ",a,b"
    df, source = read_table(tmp_path / "i.csv")
    assert list(df.columns) == ["Unnamed: 0", "a", "b"] and source.blank == ["Unnamed: 0"]
    write_table(df, tmp_path / "o.csv", source)
    assert (tmp_path / "o.csv").read_text() == (tmp_path / "i.csv").read_text()


def test_ambiguous_first_dates_try_both_day_orders():
    from ganforge.tabular.schema import _datetime_format

    assert _datetime_format(pd.Series(["05/03/2022", "25/03/2022", "01/12/2021"])) == "%d/%m/%Y"
    assert _datetime_format(pd.Series(["05/03/2022", "12/25/2022"])) == "%m/%d/%Y"
    assert _datetime_format(pd.Series(["05/03/2022", "25/13/2022"])) is None  # neither: not dates


def test_a_corrupted_weights_file_is_detected(tmp_path):
    tiny().fit(mixed()).save(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte inside a tensor: the file still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum in tabular.json"):
        TabularGAN.load(tmp_path / "m")
