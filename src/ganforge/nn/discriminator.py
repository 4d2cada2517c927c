"""The discriminator wrapper every family uses: D(x) = head(extras(features(pack(x)))).

Splitting D into `features` (family-specific) and a linear `head` lets the stabilisers work on
every family without touching it: PacGAN packing (Lin et al. 2018) groups `pac` samples into
one D input; minibatch standard deviation and minibatch discrimination append batch-level
features before the head; feature matching (Salimans et al. 2016) reads the features.
"""

from __future__ import annotations

from torch import Tensor, nn

from .layers import MinibatchDiscrimination, MinibatchStd


class Discriminator(nn.Module):
    def __init__(
        self, features: nn.Module, n_features: int, pac: int = 1, mbstd: bool = False, mbdisc_kernels: int = 0
    ) -> None:
        super().__init__()
        self.features, self.pac = features, pac
        extras: list[nn.Module] = []
        if mbstd:
            extras.append(MinibatchStd())
            n_features += 1
        if mbdisc_kernels:
            extras.append(MinibatchDiscrimination(n_features, mbdisc_kernels))
            n_features += mbdisc_kernels
        self.extras = nn.Sequential(*extras)
        self.head = nn.Linear(n_features, 1)

    def pack(self, x: Tensor) -> Tensor:
        """(B, C, ...) -> (B / pac, pac * C, ...): each D input holds `pac` samples."""
        if self.pac == 1:
            return x
        return x.reshape(x.shape[0] // self.pac, self.pac * x.shape[1], *x.shape[2:])

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(self.pack(x)).flatten(1)  # (B / pac, F)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.extras(self.forward_features(x))).squeeze(1)  # (B / pac,) logits


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation of every conv and linear weight (Miyato et al. 2018, Eq. 8):
    W / sigma(W), sigma estimated by one power iteration per forward pass."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Conv1d, nn.Conv3d)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module
