"""Evaluation: the shipped digits classifier, evaluate() on tiny runs, the CLI, and metrics during training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open

import ganforge
from ganforge.cli import main
from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.engine.checkpoint import load_checkpoint
from ganforge.errors import ConfigError, GanforgeError
from ganforge.evaluate import (
    METRICS,
    class_metrics,
    collect_features,
    compute_metrics,
    evaluate,
    fake_batches,
    feature_set,
    parse_metrics,
)
from ganforge.families import FAMILIES
from ganforge.metrics.extractors import (
    DIGITS_WEIGHTS,
    digits_probs,
    digits_split,
    get_extractor,
)

from .conftest import tiny_overrides


def train_tiny(tmp_path, name, model="mlp", data="ring8", steps=3, extra=()):
    data_args = ["data.resolution=16", "data.limit=64"] if data == "digits" else ["data.n_points=256"]
    return ganforge.train(
        data=data,
        model=model,
        out=tmp_path / name,
        steps=steps,
        batch_size=8,
        progress=False,
        overrides=[*tiny_overrides(model), *data_args, "monitor.enabled=false", *extra],
    )


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("eval"), "ring").run_dir


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("eval"), "digits", "dcgan", "digits", steps=2).run_dir


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the digits classifier


def test_digits_classifier_asset_is_small_and_accurate_on_held_out_digits():
    assert DIGITS_WEIGHTS.is_file() and DIGITS_WEIGHTS.stat().st_size < 300_000
    ds = load_dataset(DataConfig(name="digits"))
    _, held = digits_split(len(ds))
    probs = digits_probs((ds.x[held] + 1) / 2)  # (449, 10)
    assert probs.shape == (len(held), 10) and torch.allclose(probs.sum(1), torch.ones(len(held)))
    accuracy = float((probs.argmax(1) == ds.y[held]).double().mean())
    assert accuracy >= 0.97
    with safe_open(str(DIGITS_WEIGHTS), framework="pt") as fh:
        meta = json.loads(fh.metadata()["ganforge"])
    assert meta["held_out_accuracy"] == pytest.approx(accuracy, abs=1e-3)


def test_digits_classifier_takes_any_resolution():
    ds = load_dataset(DataConfig(name="digits", resolution=16, limit=64))
    pred = digits_probs((ds.x + 1) / 2).argmax(1)
    assert float((pred == ds.y).double().mean()) >= 0.9


def test_real_data_against_itself_is_a_perfect_score():
    """The same code path on real vs real: FID 0, precision = recall = coverage = 1, KID ~ 0."""
    ds = load_dataset(DataConfig(name="digits", limit=400))
    ext = get_extractor("digits", ds.kind, ds.shape)
    real = collect_features(ext, ((ds.x[i : i + 100] + 1) / 2 for i in range(0, 400, 100)))
    fake = feature_set(real.features, real.probs)
    values, skipped = compute_metrics(real, fake, METRICS)
    assert abs(values["fid"]) < 1e-3 * float(real.stats.cov.trace())  # rounding only
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    assert values["density"] == pytest.approx(1.0, abs=0.05)
    assert 5 < values["is"] <= 10  # confident and spread over the 10 classes
    assert "modes" in skipped and "is" not in skipped
    # KID's unbiased MMD² of a set with itself is negative by construction: compare random halves
    # (not even/odd rows: the digits cycle 0, 1, ..., 9). Digits 0-4 against all give about 0.3.
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    halves = feature_set(real.features[perm[:200]]), feature_set(real.features[perm[200:]])
    assert abs(compute_metrics(*halves, ["kid"])[0]["kid"]) < 0.05


def test_class_metrics_gan_test_accuracy():
    labels = torch.arange(6) % 3  # asked for 0, 1, 2, 0, 1, 2
    pred = torch.tensor([0, 1, 1, 0, 1, 1])  # class 2 always comes out as 1
    values, per_class = class_metrics(torch.eye(3)[pred], labels, 3)
    assert values["accuracy"] == pytest.approx(4 / 6)
    assert per_class["accuracy"] == [1.0, 1.0, 0.0]
    assert per_class["histogram"] == pytest.approx([2 / 6, 4 / 6, 0.0])


# --------------------------------------------------------------------------- evaluate()


def test_evaluate_ring_reports_modes_and_appends_metrics_jsonl(ring_run):
    result = evaluate(ring_run, n=500)
    values = result["metrics"]
    assert values["modes_total"] == 8 and 0 <= values["modes"] <= 8
    assert 0 <= values["high_quality"] <= 100 and "rkl" in values
    assert {"fid", "kid", "precision", "recall", "density", "coverage"} <= values.keys()
    assert "is" in result["skipped"] and result["extractor"] == "points"
    assert (result["n"], result["seed"], result["step"]) == (500, 0, 3)
    assert result["ganforge"] == ganforge.__version__ and "resize" not in result
    lines = read_jsonl(ring_run / "metrics.jsonl")
    assert lines[-1]["metrics"] == pytest.approx(values, nan_ok=True)


def test_evaluate_toy_data_defaults_to_2500_samples(ring_run):
    assert evaluate(ring_run, metrics="modes")["n"] == 2500


def test_evaluate_digits_run(digits_run):
    result = evaluate(digits_run, metrics=("fid", "kid", "pr", "dc", "is"), n=120, batch_size=50)
    values = result["metrics"]
    assert result["extractor"] == "digits-cnn" and result["n"] == 120 and result["n_real"] == 64
    assert values["fid"] > 0 and 1 <= values["is"] <= 10
    assert all(0 <= values[k] <= 1 for k in ("precision", "recall", "coverage"))


def test_fake_batches_are_gan_sample(digits_run):
    gan = ganforge.load(digits_run)
    streamed = torch.cat([x for x, _ in fake_batches(gan.trainer, 10, seed=3, batch_size=4)])
    assert torch.allclose(streamed, gan.sample(10, seed=3).clamp(0, 1))


def test_metric_names_are_checked():
    assert parse_metrics("fid, KID,fid") == ("fid", "kid")
    with pytest.raises(
        GanforgeError, match=r"unknown metric 'fod' \(did you mean 'fid'\?\); choose from: fid"
    ):
        parse_metrics("fid,fod")


# --------------------------------------------------------------------------- the CLI


def test_cli_evaluate_table_and_json(ring_run, capsys):
    assert main(["evaluate", str(ring_run), "--metrics", "modes,fid", "--n", "100"]) == 0
    out = capsys.readouterr().out
    assert "modes" in out and "fid" in out and "points" in out
    assert main(["evaluate", str(ring_run), "--metrics", "fid", "--n", "50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["fid"] >= 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "fid,bogus"], "unknown metric 'bogus'; choose from: fid, kid, pr, dc, is, modes"),
        (["--extractor", "inception"], "GANFORGE_INCEPTION_WEIGHTS"),
        (["--extractor", "inceptoin"], "unknown extractor 'inceptoin' (did you mean 'inception'?)"),
        (["--n", "1"], "n must be at least 2"),
    ],
)
def test_cli_evaluate_bad_inputs(digits_run, capsys, monkeypatch, args, message):
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    before = (digits_run / "metrics.jsonl").read_text() if (digits_run / "metrics.jsonl").exists() else ""
    assert main(["evaluate", str(digits_run), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    if "INCEPTION" in message:
        assert "--inception-weights" in err
    after = (digits_run / "metrics.jsonl").read_text() if (digits_run / "metrics.jsonl").exists() else ""
    assert after == before


def test_cli_evaluate_missing_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- during training


def test_eval_during_training_logs_metrics_and_keeps_best(tmp_path):
    extra = ["eval.every=2", "eval.metrics=modes,fid", "eval.n=64", "eval.best=fid"]
    gan = train_tiny(tmp_path, "eval", steps=4, extra=["train.log_every=1", *extra])
    run = gan.run_dir
    stats = read_jsonl(run / "stats.jsonl")
    with_metrics = [r["step"] for r in stats if "Metrics/rkl" in r]
    assert with_metrics == [2, 4] and all("Metrics/fid" in r for r in stats if r["step"] in (2, 4))
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [2, 4]
    _, meta = load_checkpoint(run / "best.safetensors")
    assert meta["best"]["metric"] == "fid" and meta["best"]["step"] in (2, 4)
    assert not list(run.glob(".*tmp*"))  # atomic writes leave no temporary files
    # A resumed run keeps evaluating (and may change its eval settings).
    ganforge.train(out=run, resume=True, steps=5, progress=False, overrides=["eval.n=32"])
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [2, 4, 5]
    # Evaluation uses its own random generators: training is unchanged by it.
    plain = train_tiny(tmp_path, "plain", steps=4, extra=["train.log_every=1"])
    losses = [{k: v for k, v in r.items() if k.startswith("Loss/")} for r in stats]
    assert losses == [
        {k: v for k, v in r.items() if k.startswith("Loss/")}
        for r in read_jsonl(plain.run_dir / "stats.jsonl")
    ]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("eval.metrics=fid,fod", "unknown metric 'fod'"),
        ("eval.best=rkl", "best metric 'rkl' needs 'modes'"),
        ("eval.n=1", "eval.n must be at least 2"),
    ],
)
def test_bad_eval_config_fails_before_writing(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        train_tiny(tmp_path, "bad", extra=["eval.every=2", setting])
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(
    not any(FAMILIES.get(name).conditional for name in FAMILIES.names()), reason="no conditional family"
)
def test_conditional_digits_run_gets_gan_test_accuracy(tmp_path):
    name = next(
        n for n in FAMILIES.names() if FAMILIES.get(n).conditional and "image" in FAMILIES.get(n).data_kinds
    )
    run = train_tiny(tmp_path, "cond", name, "digits", steps=2).run_dir
    result = evaluate(run, metrics="fid", n=40)
    assert 0 <= result["metrics"]["accuracy"] <= 1 and not math.isnan(result["metrics"]["class_kl"])
    assert len(result["per_class"]["accuracy"]) == 10 and sum(
        result["per_class"]["histogram"]
    ) == pytest.approx(1)
