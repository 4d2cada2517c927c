"""ganforge: generative adversarial networks that train, show what goes wrong, and get used.

>>> import ganforge
>>> gan = ganforge.train(data="digits", model="dcgan", out="runs/digits")
>>> images = ganforge.load("runs/digits").sample(64)   # (64, 1, 32, 32) in [0, 1]
"""

__version__ = "0.1.0"

from .api import GAN, list_components, load, train  # noqa: E402
from .errors import GanforgeError  # noqa: E402

__all__ = ["GAN", "GanforgeError", "__version__", "list_components", "load", "train"]
