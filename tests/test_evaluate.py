"""Evaluation: the shipped digits classifier, evaluate() on tiny runs, the CLI, and metrics during training."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

import ganforge
from ganforge.cli import main
from ganforge.config import DataConfig, SampleConfig
from ganforge.data import load_dataset
from ganforge.engine.checkpoint import load_checkpoint
from ganforge.errors import ConfigError, GanforgeError
from ganforge.evaluate import (
    METRICS,
    Evaluator,
    class_metrics,
    collect_features,
    compute_metrics,
    evaluate,
    fake_batches,
    feature_set,
    parse_metrics,
)
from ganforge.families import DataSpec
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
        (["--inception-weights", "/nonexistent.pth"], "--inception-weights /nonexistent.pth: no such file"),
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


# --------------------------------------------------------------------------- conditional models (GAN-test)


def test_conditional_digits_run_gets_gan_test_accuracy_end_to_end(tmp_path, capsys):
    """`ganforge evaluate` on a tiny cgan run: GAN-test accuracy, per class, in the table, the
    JSON and RUN/metrics.jsonl (the values are near chance for 2 training steps)."""
    run = train_tiny(tmp_path, "cond", "cgan", "digits", steps=2).run_dir
    assert main(["evaluate", str(run), "--metrics", "fid", "--n", "40"]) == 0
    table = capsys.readouterr().out
    assert "accuracy" in table and "class_kl" in table
    rows = {ln.split()[0]: ln.split()[1:] for ln in table.splitlines() if ln.strip()}
    assert rows["class"] == [str(c) for c in range(10)]  # the per-class table under the values
    assert len(rows["histogram"]) == 10 and all(0 <= float(v) <= 1 for v in rows["histogram"])
    assert main(["evaluate", str(run), "--metrics", "fid,is", "--n", "40", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    values, per_class = result["metrics"], result["per_class"]
    assert 0 <= values["accuracy"] <= 1 and 0 <= values["class_kl"] <= math.log(10) + 1e-9
    assert len(per_class["accuracy"]) == 10 and all(0 <= a <= 1 for a in per_class["accuracy"])
    assert sum(per_class["histogram"]) == pytest.approx(1)
    # 40 samples asked for classes 0..9 in turn: each class's accuracy is a multiple of 1/4
    assert all((4 * a) == pytest.approx(round(4 * a)) for a in per_class["accuracy"])
    assert values["accuracy"] == pytest.approx(sum(per_class["accuracy"]) / 10)
    logged = read_jsonl(run / "metrics.jsonl")
    assert [r["per_class"] for r in logged][-1] == per_class and len(logged) == 2


class HeldOutDigits:
    """Stands in for a trained conditional generator: for each class asked, it "generates" the
    next held-out real digit of that class (digits the classifier never trained on)."""

    def __init__(self) -> None:
        ds = load_dataset(DataConfig(name="digits"))
        _, held = digits_split(len(ds))
        self.x, self.y = ds.x[held], ds.y[held]
        self.family = SimpleNamespace(conditional=True, sample_z=lambda n, device, gen: torch.zeros(n, 1))
        self.spec = DataSpec("image", (1, 32, 32), n_classes=10)
        self.cfg = SimpleNamespace(sample=SampleConfig())  # plain sampling: no Jacobian truncation
        self.step = 0
        self.used: list[int] = []

    def generate(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for c in y.tolist():
            of_class = (self.y == c).nonzero().squeeze(1).tolist()
            self.used.append(next(i for i in of_class if i not in self.used))
        return self.x[self.used[-len(y) :]]


def test_gan_test_accuracy_of_real_digits_is_the_classifiers_held_out_accuracy():
    """Known answer: real held-out digits with their true labels, through the same path as a
    generator's samples, score the classifier's own held-out accuracy on those digits."""
    ds = load_dataset(DataConfig(name="digits"))
    fake = HeldOutDigits()
    evaluator = Evaluator(ds, get_extractor("digits", "image", (1, 32, 32)), ["fid"], n=400, batch_size=64)
    result = evaluator(fake)
    used = torch.tensor(fake.used)
    assert torch.equal(fake.y[used], torch.arange(400) % 10)  # the labels asked for, in turn
    direct = digits_probs((fake.x[used] + 1) / 2).argmax(1) == fake.y[used]
    values, per_class = result["metrics"], result["per_class"]
    assert values["accuracy"] == pytest.approx(float(direct.double().mean()))
    assert values["accuracy"] >= 0.97  # the asset's held-out accuracy is 0.991 (on all 449)
    assert min(per_class["accuracy"]) >= 0.9
    assert per_class["histogram"] == pytest.approx([0.1] * 10, abs=0.02)
    assert values["class_kl"] < 0.01


# --------------------------------------------------------------------------- tables


def mixed_table(n=200, seed=0):
    from .test_tabular import mixed

    return mixed(n, seed)


def table_features(df, ref=None):
    from ganforge.metrics.tables import TableEncoder
    from ganforge.tabular import infer_schema

    ref = df if ref is None else ref
    encoder = TableEncoder(infer_schema(ref), ref)
    return encoder, encoder(df)


def test_table_encoder_standardises_numbers_and_one_hots_categories():
    df = mixed_table()
    encoder, x = table_features(df)
    names = encoder.names
    assert x.shape == (200, encoder.width) and not any(n.startswith(("user_id", "code")) for n in names)
    for col in ("price", "age", "joined"):  # continuous, integer, datetime
        v = x[:, names.index(col)].double()
        assert v.mean().item() == pytest.approx(0, abs=1e-6) and v.std(
            unbiased=False
        ).item() == pytest.approx(1, abs=1e-5)
    score = x[:, names.index("score")]  # 20 % missing: 0 there, and an indicator
    missing = x[:, names.index("score:missing")]
    assert torch.equal(missing, torch.tensor(df["score"].isna().to_numpy(), dtype=torch.float32))
    assert (score[missing == 1] == 0).all()
    city = [i for i, n in enumerate(names) if n.startswith("city")]
    assert [names[i] for i in city] == ["city=paris", "city=lyon", "city=nice", "city:other"]
    assert torch.equal(x[:, city].sum(1), torch.ones(200))
    other = df.assign(city="rome")  # a value the reference never had
    assert torch.equal(encoder(other)[:, city[-1]], torch.ones(200))


def test_identical_tables_score_perfectly_and_a_shift_costs_its_square():
    df = mixed_table()
    _, x = table_features(df)
    values, _ = compute_metrics(feature_set(x), feature_set(x), ["fid", "pr", "dc"])
    assert values["fid"] == pytest.approx(0, abs=1e-6)
    assert values["precision"] == values["recall"] == values["coverage"] == 1.0
    # Moving one numeric column by one reference standard deviation moves its standardised
    # feature by exactly 1: the Fréchet distance grows by |mean shift|² = 1, covariances unchanged.
    shifted = df.assign(price=df["price"] + df["price"].std(ddof=0))
    encoder, _ = table_features(df)
    fid = compute_metrics(feature_set(x), feature_set(encoder(shifted)), ["fid"])[0]["fid"]
    assert fid == pytest.approx(1.0, abs=1e-4)
    far = df.assign(price=df["price"] + 3 * df["price"].std(ddof=0), city="rome")
    values_far, _ = compute_metrics(feature_set(x), feature_set(encoder(far)), ["fid", "pr"])
    assert values_far["fid"] > 9 and values_far["precision"] < 0.9


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    from ganforge.tabular import TabularGAN

    root = tmp_path_factory.mktemp("tab")
    df = mixed_table(120)
    df.to_csv(root / "train.csv", index=False)
    TabularGAN(steps=3, z_dim=8, g_dims=(16,), d_dims=(16,), pac=2, batch_size=20).fit(df).save(
        root / "model"
    )
    return root


def test_evaluate_tabular_model_folder(table_run, capsys):
    model, table = table_run / "model", str(table_run / "train.csv")
    result = evaluate(model, metrics="fid,kid,pr,dc,is", against=table)
    values = result["metrics"]
    assert result["extractor"] == "table" and result["n"] == result["n_real"] == 120
    assert result["step"] == 3 and result["features"] > 10 and "is" in result["skipped"]
    assert values["fid"] > 0 and all(0 <= values[k] <= 1 for k in ("precision", "recall", "coverage"))
    assert read_jsonl(model / "metrics.jsonl")[-1]["metrics"] == pytest.approx(values)
    assert evaluate(model, metrics="fid", against=table)["metrics"]["fid"] == values["fid"]  # seeded
    assert main(["evaluate", str(model), "--against", table, "--metrics", "fid", "--n", "50"]) == 0
    assert "fid" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "is a tabular model folder, which does not record its training table; pass --against TABLE"),
        (["--against", "{root}/train.csv", "--extractor", "digits"], "encoded columns (extractor 'table')"),
        (["--against", "{root}/nope.csv"], "table not found"),
    ],
)
def test_cli_evaluate_tabular_bad_inputs(table_run, capsys, args, message):
    args = [a.replace("{root}", str(table_run)) for a in args]
    assert main(["evaluate", str(table_run / "model"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
