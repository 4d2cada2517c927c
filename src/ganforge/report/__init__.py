"""What a run shows a person: sample grids, point scatters and training plots (PNG)."""

from .images import save_grid, save_points, to_uint8_grid
from .plots import plot_training

__all__ = ["plot_training", "save_grid", "save_points", "to_uint8_grid"]
