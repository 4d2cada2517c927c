"""The one training engine: trainer, callbacks, checkpoints and run folders."""

from .callbacks import Callback
from .trainer import Trainer, resolve_device

__all__ = ["Callback", "Trainer", "resolve_device"]
