"""Built-in datasets: sizes, ranges, and the mixture parameters the mode metrics rely on."""

import math

import pytest
import torch

from ganforge.config import DataConfig
from ganforge.data import DATASETS, BatchSampler, load_dataset
from ganforge.errors import DataError


def test_ring8_and_grid25_match_the_pacgan_protocol():
    ring = load_dataset(DataConfig(name="ring8", n_points=20_000))
    assert ring.modes.shape == (8, 2) and ring.mode_std == 0.01
    assert torch.allclose(ring.modes.norm(dim=1), torch.ones(8), atol=1e-6)
    dist = torch.cdist(ring.x, ring.modes).min(dim=1).values
    assert (dist < 3 * 0.01 * math.sqrt(2) * 1.5).float().mean() > 0.99
    grid = load_dataset(DataConfig(name="grid25", n_points=20_000))
    assert grid.modes.shape == (25, 2) and grid.mode_std == 0.05
    assert set(grid.modes[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert torch.bincount(grid.y).min() > 600  # every mode used, roughly uniformly


def test_toy_data_is_fixed_by_its_own_seed():
    a, b = (load_dataset(DataConfig(name="spiral", n_points=50)) for _ in range(2))
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, load_dataset(DataConfig(name="spiral", n_points=50, seed=1)).x)


@pytest.mark.parametrize("resolution", [8, 16, 32])
def test_digits(resolution):
    ds = load_dataset(DataConfig(name="digits", resolution=resolution))
    assert ds.x.shape == (1797, 1, resolution, resolution) and ds.n_classes == 10
    assert ds.x.min() >= -1 and ds.x.max() <= 1 and ds.x.min() == -1


def test_digits_rejects_tiny_resolution():
    with pytest.raises(DataError, match="at least 8 px"):
        load_dataset(DataConfig(name="digits", resolution=4))


def test_stacked_digits_labels_name_the_channel_digits():
    ds = load_dataset(DataConfig(name="stacked_digits", n_points=64, resolution=8))
    digits = load_dataset(DataConfig(name="digits", resolution=8))
    assert ds.x.shape == (64, 3, 8, 8) and ds.n_classes == 1000
    first = ds.x[0]
    for channel, digit in enumerate(f"{int(ds.y[0]):03d}"):
        matches = (digits.x[:, 0] == first[channel]).flatten(1).all(dim=1)
        assert digits.y[matches].tolist()[0] == int(digit)


def test_every_builtin_loads_small():
    for name in DATASETS.names():
        ds = load_dataset(DataConfig(name=name, n_points=16, limit=16))
        assert len(ds) == 16 and torch.isfinite(ds.x).all()


def test_sampler_visits_every_example_once_per_epoch():
    sampler = BatchSampler(10, 3, seed=0)
    seen = torch.cat([sampler.next_indices() for _ in range(3)])
    assert sorted(seen.tolist()) == sorted(set(seen.tolist())) and len(seen) == 9
