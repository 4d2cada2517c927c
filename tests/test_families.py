"""The family contract, over every registered family at tiny size: shapes, ranges, gradients."""

from dataclasses import replace

import pytest
import torch

from ganforge.api import build_config
from ganforge.errors import ConfigError
from ganforge.families import FAMILIES, DataSpec

SPECS = {
    "points": DataSpec("points", (2,)),
    "grey8": DataSpec("image", (1, 8, 8)),
    "grey28": DataSpec("image", (1, 28, 28)),
    "rgb32": DataSpec("image", (3, 32, 32)),
    "rgba48": DataSpec("image", (4, 48, 48)),
    "rgb64": DataSpec("image", (3, 64, 64)),
    "table": DataSpec("table", (7,)),  # 7 encoded values (no layout given: 7 tanh spans)
}


def cases():
    for model in FAMILIES.names():
        for spec_name, spec in SPECS.items():
            if spec.kind in FAMILIES.get(model).data_kinds:
                yield model, spec_name


@pytest.mark.parametrize(("model", "spec_name"), list(cases()))
def test_shapes_and_gradients(model, spec_name):
    family_cls = FAMILIES.get(model)
    # Conditional families train on labelled data; G and D then also take the labels y.
    spec = replace(SPECS[spec_name], n_classes=2) if family_cls.conditional else SPECS[spec_name]
    y = (torch.arange(3) % 2,) if family_cls.conditional else ()
    cfg = build_config({"model": model, "net": family_cls.tiny}, spec)
    family = family_cls(cfg, spec)
    G, D = family.build()
    z = family.sample_z(3, torch.device("cpu"), torch.Generator().manual_seed(0))
    x = family.generate(G, z, *y)
    assert x.shape == (3, *spec.shape)
    if spec.kind == "image":
        assert x.min() >= -1 and x.max() <= 1
    out = D(x, *y)
    assert out.shape == (3,)
    out.sum().backward()
    assert all(p.grad is not None for p in G.parameters())


def test_dcgan_rejects_unsupported_resolution():
    spec = DataSpec("image", (1, 30, 30))
    cfg = build_config({"model": "dcgan"}, spec)
    with pytest.raises(ConfigError, match="s\\*2\\^k"):
        FAMILIES.get("dcgan")(cfg, spec).build()


def test_dcgan_refuses_points():
    spec = SPECS["points"]
    with pytest.raises(ConfigError, match="trains on image data"):
        FAMILIES.get("dcgan")(build_config({"model": "dcgan"}, SPECS["grey8"]), spec)


def test_dcgan_follows_the_paper():
    """Radford et al. 2016: no pooling, BN in G, LeakyReLU(0.2) in D, tanh output."""
    spec = SPECS["rgb64"]
    cfg = build_config({"model": "dcgan"}, spec)
    G, D = FAMILIES.get("dcgan")(cfg, spec).build()
    kinds = {type(m).__name__ for m in [*G.modules(), *D.modules()]}
    assert not any("Pool" in k for k in kinds)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert isinstance(list(G.modules())[-1], torch.nn.Tanh)
    w = [m.weight for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)][0]
    assert abs(w.std().item() - 0.02) < 0.002
