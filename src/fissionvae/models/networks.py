"""Encoder and decoder networks. All take/return batch-first tensors.

Images are (B, C, H, W) floats in [0, 1]; latent codes are (B, d).
"""

from __future__ import annotations

import itertools
import math

from torch import Tensor, nn

from fissionvae.config import DecoderConfig
from fissionvae.models.distributions import DiagGaussian


def mlp(sizes: list[int], *, final_activation: bool = False) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ReLU in between."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GaussianMLP(nn.Module):
    """in_dim -> hidden (ReLU) -> (mean, logvar) of a diagonal Gaussian over out_dim.

    Used for q(z1|x) on flattened images, q(z2|z1) and p(z1|z2).
    """

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        super().__init__()
        self.body = mlp([in_dim, *hidden], final_activation=True) if hidden else nn.Identity()
        self.head = nn.Linear(hidden[-1] if hidden else in_dim, 2 * out_dim)

    def forward(self, x: Tensor) -> DiagGaussian:
        mean, logvar = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)
        return DiagGaussian(mean, logvar)


class MLPDecoder(nn.Module):
    """z -> hidden (ReLU) -> likelihood parameters of shape (B, C*P, H, W)."""

    def __init__(self, latent_dim: int, hidden: list[int], out_shape: tuple[int, int, int]):
        super().__init__()
        self.out_shape = out_shape
        self.net = mlp([latent_dim, *hidden, math.prod(out_shape)])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.out_shape)


class ConvDecoder(nn.Module):
    """z -> Linear -> (hidden[0], H/4, W/4) -> transposed convs (x2, x2) -> (C*P, H, W).

    ``hidden`` lists the channel counts before each upsampling; two stride-2 transposed
    convolutions (kernel 4, padding 1) take 7x7 to 28x28 (8x8 to 32x32).
    """

    def __init__(self, latent_dim: int, hidden: list[int], out_shape: tuple[int, int, int]):
        super().__init__()
        c_out, h, w = out_shape
        if h % 4 or w % 4:
            raise ValueError(f"conv decoder needs image sides divisible by 4, got {h}x{w}")
        if len(hidden) != 2:
            raise ValueError(f"conv decoder 'hidden' lists 2 channel counts, got {hidden}")
        self.start = (hidden[0], h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(latent_dim, math.prod(self.start)), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(hidden[0], hidden[1], 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden[1], c_out, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(z.shape[0], *self.start))


def norm_layers(norm: str, channels: int) -> list[nn.Module]:
    """[] for ``none``; [BatchNorm2d] for ``batch``; [GroupNorm] with the most groups <= 8 dividing ``channels``
    for ``group``."""
    if norm == "batch":
        return [nn.BatchNorm2d(channels)]
    if norm == "group":
        groups = max(g for g in range(1, 9) if channels % g == 0)
        return [nn.GroupNorm(groups, channels)]
    if norm == "none":
        return []
    raise ValueError(f"unknown norm {norm!r}; choose none, batch or group")


def conv_block(conv: nn.Module, channels: int, norm: str) -> list[nn.Module]:
    """conv -> [norm] -> LeakyReLU(0.01), the block of Dugdale's notebook (BatchNorm there)."""
    return [conv, *norm_layers(norm, channels), nn.LeakyReLU(0.01)]


class ConvGaussianEncoder(nn.Module):
    """Image -> kernel-3, stride-1, unpadded convs through ``channels`` -> flatten -> (mean, logvar).

    With channels [16, 32] on 28x28 this is Dugdale's encoder: 28 -> 26 -> 24, 32*24*24 features.
    """

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], out_dim: int, norm: str):
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels, strict=True):
            layers += conv_block(nn.Conv2d(c_in, c_out, 3), c_out, norm)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1] * (h - 2 * len(channels)) * (w - 2 * len(channels)), 2 * out_dim)

    def forward(self, x: Tensor) -> DiagGaussian:
        mean, logvar = self.head(self.body(x).flatten(1)).chunk(2, dim=-1)
        return DiagGaussian(mean, logvar)


class MirrorConvDecoder(nn.Module):
    """z -> Linear -> (hidden[0], H - 2L, W - 2L) -> kernel-3 transposed convs -> (C*P, H, W).

    The mirror of :class:`ConvGaussianEncoder` with channels ``reversed(hidden)``; each upsampling
    but the last is followed by [BatchNorm] and LeakyReLU; the last by [BatchNorm] only (the
    likelihood applies the output non-linearity, e.g. the sigmoid of Bernoulli), or by nothing
    with ``output_norm=False``.
    """

    def __init__(
        self, latent_dim: int, hidden: list[int], out_shape: tuple[int, int, int], norm: str, output_norm: bool = True
    ):
        super().__init__()
        c_out, h, w = out_shape
        self.start = (hidden[0], h - 2 * len(hidden), w - 2 * len(hidden))
        self.fc = nn.Linear(latent_dim, math.prod(self.start))
        layers: list[nn.Module] = []
        for c_in, c_next in itertools.pairwise(hidden):
            layers += conv_block(nn.ConvTranspose2d(c_in, c_next, 3), c_next, norm)
        layers.append(nn.ConvTranspose2d(hidden[-1], c_out, 3))
        if output_norm:
            layers += norm_layers(norm, c_out)
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(z.shape[0], *self.start))


class StridedConvEncoder(nn.Module):
    """q(z1|x) for RGB: stride-2 kernel-4 convs through ``channels`` (each -> [norm] -> LeakyReLU(0.2)),
    flatten, an MLP head through ``head`` widths (ReLU), then a linear layer to (mean, logvar).

    With channels [32, 64, 128] a 32x32 image goes 16x16 -> 8x8 -> 4x4 (2,048 features).
    """

    def __init__(
        self, image_shape: tuple[int, int, int], channels: list[int], head: list[int], out_dim: int, norm: str
    ):
        super().__init__()
        c, h, w = image_shape
        down = 2 ** len(channels)
        if not channels or h % down or w % down:
            raise ValueError(
                f"strided encoder: image sides {h}x{w} must be divisible by 2^{len(channels)} (one halving per "
                f"channel count {channels})"
            )
        layers: list[nn.Module] = []
        for c_in, c_out in zip([c, *channels[:-1]], channels, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), *norm_layers(norm, c_out), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = GaussianMLP(channels[-1] * (h // down) * (w // down), head, out_dim)

    def forward(self, x: Tensor) -> DiagGaussian:
        return self.head(self.body(x))


class StridedConvDecoder(nn.Module):
    """p(x|z1) for RGB: an MLP head z1 -> ``head`` widths -> (hidden[0], H/2^L, W/2^L) (ReLU), then
    stride-2 kernel-4 transposed convs through ``hidden`` (each -> [norm] -> LeakyReLU(0.2)), the last
    one straight to the likelihood's parameter channels. L = len(hidden) halvings (32 -> 4 for 3).
    """

    def __init__(self, latent_dim: int, hidden: list[int], head: list[int], out_shape: tuple[int, int, int], norm: str):
        super().__init__()
        c_out, h, w = out_shape
        up = 2 ** len(hidden)
        if not hidden or h % up or w % up:
            raise ValueError(
                f"strided decoder: image sides {h}x{w} must be divisible by 2^{len(hidden)} (one doubling per channel "
                f"count {hidden})"
            )
        self.start = (hidden[0], h // up, w // up)
        self.fc = mlp([latent_dim, *head, math.prod(self.start)], final_activation=True)
        layers: list[nn.Module] = []
        for c_in, c_next in itertools.pairwise(hidden):
            layers += [
                nn.ConvTranspose2d(c_in, c_next, 4, stride=2, padding=1),
                *norm_layers(norm, c_next),
                nn.LeakyReLU(0.2),
            ]
        layers.append(nn.ConvTranspose2d(hidden[-1], c_out, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconv(self.fc(z).view(z.shape[0], *self.start))


def build_image_encoder(
    kind: str,
    image_shape: tuple[int, int, int],
    hidden: list[int],
    latent_dim: int,
    norm: str,
    head: list[int] | None = None,
) -> nn.Module:
    """q(z1|x) network: ``mlp`` on flattened pixels, ``conv`` (Dugdale's) or ``strided`` (RGB, with an MLP ``head``)."""
    if kind == "mlp":
        return GaussianMLP(math.prod(image_shape), hidden, latent_dim)
    if kind == "conv":
        return ConvGaussianEncoder(image_shape, hidden, latent_dim, norm)
    if kind == "strided":
        return StridedConvEncoder(image_shape, hidden, head or [], latent_dim, norm)
    raise ValueError(f"unknown encoder kind {kind!r}")


def build_image_decoder(
    cfg: DecoderConfig, latent_dim: int, out_shape: tuple[int, int, int], norm: str = "none"
) -> nn.Module:
    """p(x|z1) network of the kind named in the decoder config."""
    if cfg.kind == "mlp":
        return MLPDecoder(latent_dim, cfg.hidden, out_shape)
    if cfg.kind == "conv":
        return ConvDecoder(latent_dim, cfg.hidden, out_shape)
    if cfg.kind == "conv-mirror":
        return MirrorConvDecoder(latent_dim, cfg.hidden, out_shape, norm, cfg.output_norm)
    if cfg.kind == "strided":
        return StridedConvDecoder(latent_dim, cfg.hidden, cfg.head, out_shape, norm)
    raise ValueError(f"unknown decoder kind {cfg.kind!r}")
