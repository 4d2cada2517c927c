"""The `ganforge` command end to end, and every bad-input path: one line, exit 2, nothing written."""

import json

import numpy as np
import pytest

from ganforge.cli import main

from .conftest import tiny_overrides


def sets(model):
    return [arg for o in tiny_overrides(model) for arg in ("--set", o)]


def train_args(out, model="mlp", data="ring8", steps=3, *extra):
    return [
        "train",
        "--data",
        data,
        "--model",
        model,
        "--steps",
        str(steps),
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--quiet",
        *sets(model),
        "--set",
        "data.n_points=256",
        *extra,
    ]


@pytest.fixture
def ring_run(tmp_path):
    out = tmp_path / "ring"
    assert main(train_args(out)) == 0
    return out


def test_train_then_sample_every_format(ring_run, tmp_path):
    for name in ("s.npy", "s.png", "s.npz"):
        assert main(["sample", str(ring_run), "--n", "10", "--out", str(tmp_path / name)]) == 0
    assert np.load(tmp_path / "s.npy").shape == (10, 2)
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert np.load(tmp_path / "s.npz")["x"].shape == (10, 2)


def test_uppercase_suffixes_and_output_paths_that_cannot_be_written(ring_run, tmp_path, capsys):
    for name in ("S.NPY", "S.NPZ"):  # np.save/np.savez append a lower-case suffix to a path
        assert main(["sample", str(ring_run), "--n", "5", "--out", str(tmp_path / name)]) == 0
    assert np.load(tmp_path / "S.NPY").shape == (5, 2) and np.load(tmp_path / "S.NPZ")["x"].shape == (5, 2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("S", ".S"))) == ["S.NPY", "S.NPZ"]
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir.png").mkdir()
    capsys.readouterr()
    assert main(["sample", str(ring_run), "--out", str(tmp_path / "adir.png")]) == 2
    assert main(["sample", str(ring_run), "--out", str(tmp_path / "afile" / "x.png")]) == 2
    assert main(train_args(tmp_path / "afile" / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("ganforge: error: cannot write ") for line in err), err
    assert "is a directory" in err[0] and all("folder path is a file" in line for line in err[1:])


def test_user_data_path_is_stored_absolute(tmp_path, monkeypatch, capsys):
    import yaml

    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", "pts.npy", "--model", "mlp", "--steps", "3", "--batch-size", "8"]
    assert main([*args, "--out", "run", "--quiet", *sets("mlp")]) == 0
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["name"]
    assert stored == str(tmp_path / "pts.npy")  # resume and evaluate work from any folder
    monkeypatch.chdir(tmp_path.parent)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "4", "--quiet"]) == 0
    assert "data changed" not in capsys.readouterr().err
    # The file changed under the run: the resume goes on, and says it will not be reproducible.
    np.save(tmp_path / "pts.npy", np.random.default_rng(1).normal(size=(70, 2)).astype(np.float32))
    assert main(["train", "--resume", str(tmp_path / "run"), "--steps", "5", "--quiet"]) == 0
    assert "ganforge: warning: the data changed since" in capsys.readouterr().err


def test_progress_survives_a_closed_stream():
    import io

    from ganforge.engine.run import Progress

    stream = io.StringIO()
    progress = Progress(stream, interactive=False)
    stream.close()  # `ganforge train ... | tee log`: the same Ctrl-C ends tee first
    progress.write("step 1\n")
    assert progress.stream is None
    progress.write("step 2\n")  # nothing raised: the display stops, training goes on


def test_image_samples_are_in_unit_range(tmp_path):
    out = tmp_path / "dig"
    assert (
        main(train_args(out, "dcgan", "digits", 2, "--set", "data.resolution=16", "--set", "data.limit=32"))
        == 0
    )
    assert main(["sample", str(out), "--n", "6", "--seed", "1", "--out", str(tmp_path / "x.npy")]) == 0
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (6, 1, 16, 16) and x.min() >= 0 and x.max() <= 1


def test_resume_from_the_cli(ring_run):
    assert main(["train", "--resume", str(ring_run), "--steps", "5", "--quiet"]) == 0
    steps = [json.loads(x)["step"] for x in (ring_run / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_resume_auto_starts_fresh_then_continues(tmp_path):
    out = tmp_path / "auto"
    assert main([*train_args(out), "--resume", "auto"]) == 0
    assert main([*train_args(out, steps=4), "--resume", "auto"]) == 0
    assert json.loads((out / "stats.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_list(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("dcgan", "mlp", "wgan-gp", "hinge", "lsgan", "minimax", "ring8", "grid25", "digits"):
        assert name in text
    assert "(PacGAN, Sec. 5.1)." in text and "the analogue of Stacked MNIST (Metz et al. 2017" in text


def test_first_sentence_keeps_abbreviations():
    from ganforge.api import first_sentence

    doc = "A spiral (Smith et al. 2020,\n    Sec. 3.1), centred. More detail.\n\nAnother paragraph."
    assert first_sentence(doc) == "A spiral (Smith et al. 2020, Sec. 3.1), centred."
    assert first_sentence("No full stop") == "No full stop"


BAD_TRAIN = [
    (["--model", "nope"], "unknown model 'nope'"),
    (["--loss", "hing"], "unknown loss 'hing' (did you mean 'hinge'?)"),
    (["--data", "rings8"], "unknown dataset 'rings8' (did you mean 'ring8'?)"),
    (["--data", "no/such/folder"], "data path not found: no/such/folder"),
    (["--set", "train.stesp=3"], "unknown config key 'train.stesp' (did you mean 'steps'?)"),
    (["--set", "train.steps"], "not of the form key=value"),
    (["--set", "train.batch_size=abc"], "train.batch_size: expected an integer"),
    (["--steps", "0"], "train.steps must be at least 1"),
    (["--device", "cuda:0"], "CUDA is not available"),
    (["--model", "dcgan", "--data", "ring8"], "trains on image data"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_TRAIN)
def test_bad_train_arguments(tmp_path, capsys, extra, message):
    if "cuda" in " ".join(extra):
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    args = ["train", "--data", "ring8", "--steps", "2", "--out", str(out), "--quiet", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
    assert not out.exists()


def test_unknown_flag_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--stpes", "3"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--stpes" in err


def test_missing_config_file_and_bad_yaml(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "config file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def newest_checkpoint(run_dir):
    manifest = json.loads((run_dir / "checkpoints" / "manifest.json").read_text())
    return run_dir / "checkpoints" / manifest["checkpoints"][-1]["file"]


def test_existing_run_folder_is_not_overwritten(ring_run, capsys):
    before = newest_checkpoint(ring_run).read_bytes()
    assert main(train_args(ring_run)) == 2
    assert "already exists" in capsys.readouterr().err
    assert newest_checkpoint(ring_run).read_bytes() == before


def test_resume_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--resume", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err


def test_out_is_required(capsys):
    assert main(["train", "--data", "ring8"]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x.jpg"], "unsupported format .jpg"),
        (["--n", "0", "--out", "x.npy"], "--n must be at least 1"),
    ],
)
def test_bad_sample_arguments(ring_run, tmp_path, capsys, args, message):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    assert main(["sample", str(ring_run), *args]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("x.*"))


def test_sample_from_missing_or_corrupt_run(tmp_path, capsys, ring_run):
    assert main(["sample", str(tmp_path / "nope"), "--out", str(tmp_path / "s.npy")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    newest_checkpoint(ring_run).write_bytes(b"\x00" * 10)  # the run's only checkpoint
    assert main(["sample", str(ring_run), "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "checksum mismatch" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.npy").exists()


def test_pickle_checkpoint_is_refused_without_unpickling(tmp_path, capsys, ring_run):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    newest_checkpoint(ring_run).write_bytes(pickle.dumps(Evil()))
    assert main(["sample", str(ring_run), "--out", str(tmp_path / "s.npy")]) == 2
    assert not marker.exists()
