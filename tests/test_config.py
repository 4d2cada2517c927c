"""Config: typed coercion, unknown keys, YAML safety, layering of defaults/recipe/user."""

import pytest

from ganforge.api import build_config, user_settings
from ganforge.config import Config, TrainConfig, coerce, from_dict, load_file, overrides_to_dict, to_dict
from ganforge.errors import ConfigError, GanforgeError
from ganforge.families import DataSpec

IMAGES = DataSpec("image", (1, 32, 32), 10)
POINTS = DataSpec("points", (2,), 8)


def test_coercion_of_override_strings():
    t = from_dict(TrainConfig, overrides_to_dict(["g_lr=1e-4", "steps=1_000", "ema_decay=0", "n_dis=2.0"]))
    assert (t.g_lr, t.steps, t.ema_decay, t.n_dis) == (1e-4, 1000, 0.0, 2)
    assert coerce("true", bool, "k") is True and coerce("off", bool, "k") is False
    assert coerce("0.5,0.9", tuple[float, float], "k") == (0.5, 0.9)
    assert coerce("none", int | None, "k") is None


@pytest.mark.parametrize("value", ["abc", "1.5", True])
def test_bad_int_rejected(value):
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        from_dict(Config, {"train": {"steps": value}})


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stpes' \(did you mean 'steps'\?\)"):
        from_dict(Config, {"train": {"stpes": 3}})


@pytest.mark.parametrize("text", ["train.steps=-1", "train.g_lr=0", "train.beta1=1.0", "train.batch_size=0"])
def test_out_of_range_values_rejected(text):
    with pytest.raises(ConfigError, match="must"):
        from_dict(Config, overrides_to_dict([text]))


def test_override_needs_equals():
    with pytest.raises(ConfigError, match="key=value"):
        overrides_to_dict(["train.steps"])


def test_yaml_syntax_errors_say_where_and_what(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  g_lr: [1\n")
    with pytest.raises(ConfigError, match=r"not valid YAML: line 3, column 1: expected ',' or '\]'"):
        load_file(bad)


def test_yaml_python_tags_are_refused(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_file(bad)


def test_layering_defaults_recipe_user(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  steps: 7\nnet:\n  g_hidden: 32\n")
    settings = user_settings(cfg_file, ["train.batch_size=5"], data="ring8", steps=None)
    cfg = build_config(settings, POINTS)
    assert cfg.model == "mlp"  # default for points
    assert cfg.train.steps == 7 and cfg.train.batch_size == 5  # user wins
    assert cfg.train.g_lr == 1e-3  # the mlp-on-points recipe beats the global default 2e-4
    assert cfg.net.g_hidden == 32 and cfg.net.d_hidden == 128  # user, then recipe


def test_points_recipe_scales_r1_gamma_with_the_data_variance():
    """gamma = 0.02 x the data's per-dimension variance, to 2 significant digits (ring8 0.5 -> 0.01,
    grid25 8 -> 0.16); no R1 beside a Lipschitz critic's own constraint, none without a variance."""
    from ganforge.api import data_config, spec_of
    from ganforge.data import load_dataset

    gammas = {}
    for name in ("ring8", "grid25"):
        spec = spec_of(load_dataset(data_config({"data": {"name": name}})))
        gammas[name] = build_config({}, spec).stab.r1_gamma
        assert build_config({"loss": "wgan-gp"}, spec).stab.r1_gamma == 0.0
        assert build_config({"stab": {"r1_gamma": 0}}, spec).stab.r1_gamma == 0.0  # the user wins
    assert gammas == {"ring8": 0.01, "grid25": 0.16}
    assert build_config({}, POINTS).stab.r1_gamma == 0.0  # a spec without a variance (old runs)


def test_points_recipe_samples_with_jacobian_truncation_and_images_do_not():
    assert build_config({}, POINTS).sample.jacobian_limit == 20.0
    assert (
        build_config({"sample": {"jacobian_limit": 0}}, POINTS).sample.jacobian_limit == 0.0
    )  # the user wins
    assert build_config({}, IMAGES).sample.jacobian_limit == 0.0
    assert build_config({"model": "mlp"}, IMAGES).sample.jacobian_limit == 0.0


def test_small_image_recipes_have_r1_except_beside_a_lipschitz_critic():
    assert build_config({}, IMAGES).stab.r1_gamma == 1.0
    assert build_config({"loss": "hinge"}, IMAGES).stab.r1_gamma == 1.0
    assert build_config({"loss": "wgan-gp"}, IMAGES).stab.r1_gamma == 0.0
    assert build_config({}, DataSpec("image", (3, 64, 64))).stab.r1_gamma == 0.0  # measured at 32 px only
    assert build_config({"model": "cgan"}, IMAGES).stab.r1_gamma == 1.0
    assert build_config({"model": "cgan", "loss": "wgan"}, IMAGES).stab.r1_gamma == 0.0


def test_spec_variance_round_trips_and_is_not_part_of_equality():
    from ganforge.api import data_config, spec_of
    from ganforge.data import load_dataset

    spec = spec_of(load_dataset(data_config({"data": {"name": "grid25"}})))
    assert spec.variance == pytest.approx(8.0, rel=0.02)  # {-4..4 step 2} has variance 8, plus 0.05^2
    assert DataSpec.from_dict(spec.to_dict()).variance == spec.variance
    old = {"kind": "points", "shape": [2], "n_classes": 25}  # a run saved before the field existed
    assert DataSpec.from_dict(old) == spec and "variance" not in IMAGES.to_dict()


def test_wgan_gp_recipe_swaps_batch_norm_out_of_D():
    cfg = build_config({"loss": "wgan-gp"}, IMAGES)
    assert cfg.model == "dcgan" and cfg.net.d_norm == "layer" and cfg.train.n_dis == 5


def test_unknown_model_lists_choices():
    with pytest.raises(
        GanforgeError,
        match=r"unknown model 'dcgna' \(did you mean 'dcgan'\?\); choose from: cgan, dcgan, mlp",
    ):
        build_config({"model": "dcgna"}, IMAGES)


def test_round_trip_through_dict():
    cfg = build_config({"model": "dcgan", "net": {"z_dim": 12}}, IMAGES)
    again = build_config(to_dict(cfg), IMAGES)
    assert to_dict(again) == to_dict(cfg)
