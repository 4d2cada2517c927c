"""`ganforge sweep`: grid parsing, one run per cell and seed, resumable results, heat map."""

import json

import pytest

from ganforge.cli import main
from ganforge.errors import ConfigError
from ganforge.sweep import cell_name, cell_overrides, parse_grid, summarise, summary_markdown


def test_parse_grid():
    assert parse_grid(["train.g_lr=1e-4,1e-3", "loss.name=ns"]) == [
        ("train.g_lr", ["1e-4", "1e-3"]),
        ("loss.name", ["ns"]),
    ]
    for bad in (["train.g_lr"], ["=1,2"], ["a=1", "a=2"], []):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_summary_orders_best_first():
    results = [{"cell": {"k": str(v)}, "cell_name": str(v), "value": v} for v in (3.0, 1.0, 2.0)]
    assert [r["cell"]["k"] for r in summarise(results, lower=True)] == ["1.0", "2.0", "3.0"]
    assert [r["cell"]["k"] for r in summarise(results, lower=False)] == ["3.0", "2.0", "1.0"]


def test_sweep_end_to_end_and_continues(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--data",
        "ring8",
        "--grid",
        "train.g_lr=1e-4,1e-3",
        "--seeds",
        "1",
        "--steps",
        "3",
        "--metric",
        "modes",
        "--n",
        "200",
        "--set",
        "net.g_hidden=8",
        "--set",
        "net.d_hidden=8",
        "--set",
        "data.n_points=256",
        "--set",
        "train.batch_size=16",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(0 <= json.loads(x)["value"] <= 8 for x in lines)
    assert (out / "heatmap_modes.png").stat().st_size > 1000
    assert "| train.g_lr |" in capsys.readouterr().out
    assert main(args) == 0  # a second call finds every run done and trains nothing
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    other = [*args[:-2], "--steps", "4", "--out", str(out)]  # another setting: refused, nothing mixed in
    assert main(other) == 2
    assert "holds a sweep made with other settings (steps: 3, now 4)" in capsys.readouterr().err
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_summary_without_any_value_names_no_winner():
    rows = summarise([{"cell": {"a": "1"}, "cell_name": "a=1", "value": None}], lower=False)
    text = summary_markdown(rows, "rkl", lower=False, seeds=1)
    assert "Best" not in text and "No cell has a rkl value" in text


def test_sweep_rejects_bad_key_before_training(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--data", "ring8", "--grid", "train.gl_r=1,2", "--out", str(out)]) == 2
    assert "unknown config key 'train.gl_r'" in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_sweep_rejects_too_few_samples_before_training(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", "--data", "ring8", "--grid", "train.g_lr=1e-3", "--seeds", "1", "--n", "1"]
    assert main([*args, "--out", str(out)]) == 2
    assert "n must be at least 2 samples, got 1" in capsys.readouterr().err
    assert not out.exists()


def test_tied_keys_share_one_axis():
    cell = {"train.g_lr+train.d_lr": "1e-3", "loss.name": "hinge"}
    assert cell_overrides(cell) == ["train.g_lr=1e-3", "train.d_lr=1e-3", "loss.name=hinge"]
    assert cell_name(cell) == "g_lr+d_lr=1e-3_name=hinge"


def test_tied_keys_are_checked_before_training(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sweep", "--data", "ring8", "--grid", "train.g_lr+train.dlr=1,2", "--out", str(out)]) == 2
    assert "unknown config key 'train.dlr'" in capsys.readouterr().err
    assert not (out / "runs").exists()
