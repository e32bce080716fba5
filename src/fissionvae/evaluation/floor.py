"""The floor: the trivial model every results page shows beside the real ones.

A model that ignores its input and predicts each pixel from the training set's per-pixel
statistics. A generative model that does not beat it has learned nothing about the images.

- ``bernoulli`` (greyscale, the papers' BCE): each pixel is Bernoulli with the mean training
  intensity, smoothed as (sum + 1/2) / (N + 1) so that a pixel that is 0 in every training image
  still gives a finite NLL on a test image where it is not. NLL is the summed BCE in nats/image,
  the same quantity as the VAEs' reconstruction term and NLL bound.
- ``gaussian`` (RGB): each pixel (and channel) is a discretised Gaussian on the 256-bin grid of
  [-1, 1] with the training set's per-pixel mean and std (the std floored at one bin, 2/255),
  scored with the same discretised log-probability as the ``gaussian`` likelihood, so its
  nats/image is a true code length comparable with ``gaussian`` and ``dlml`` models.

Samples: the Bernoulli floor's "sample" is its mean image (what the VAEs' grids and FID samples
show for a Bernoulli decoder); the Gaussian floor draws independent per-pixel noise, quantised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fissionvae.models.likelihoods import BIN, discretised_gaussian_log_prob, quantise_pm1

FLOOR_KINDS = ("bernoulli", "gaussian")


@dataclass(frozen=True)
class FloorModel:
    """Per-pixel statistics of a training set: ``mean`` (and ``std`` for the Gaussian), shape (C, H, W).

    Bernoulli statistics are on the [0, 1] scale; Gaussian ones on the [-1, 1] scale.
    """

    kind: str
    mean: Tensor
    std: Tensor | None = None

    @classmethod
    def fit(cls, images: Tensor, kind: str = "bernoulli") -> FloorModel:
        """Fit to training images (N, C, H, W) in [0, 1]."""
        if kind not in FLOOR_KINDS:
            raise ValueError(f"floor kind must be one of {FLOOR_KINDS}, got {kind!r}")
        if images.ndim != 4 or images.shape[0] < 1:
            raise ValueError(f"floor: expected training images of shape (N, C, H, W), got {tuple(images.shape)}")
        x = images.to(torch.float64)
        if kind == "bernoulli":
            return cls(kind, (x.sum(0) + 0.5) / (x.shape[0] + 1))
        pm1 = x * 2.0 - 1.0
        return cls(kind, pm1.mean(0), pm1.std(0, unbiased=False).clamp_min(2 * BIN))

    def nll(self, images: Tensor) -> Tensor:
        """Per-image negative log-likelihood in nats, shape (N,), of images (N, C, H, W) in [0, 1]."""
        x = images.to(torch.float64)
        if self.kind == "bernoulli":
            p = self.mean.expand_as(x)
            return F.binary_cross_entropy(p, x, reduction="none").flatten(1).sum(1)
        assert self.std is not None
        pm1 = quantise_pm1(x * 2.0 - 1.0)
        mean, log_std = self.mean.expand_as(pm1), torch.log(self.std).expand_as(pm1)
        return -discretised_gaussian_log_prob(pm1, mean, log_std).flatten(1).sum(1)

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` images in [0, 1], float32, shape (n, C, H, W)."""
        if self.kind == "bernoulli":
            return self.mean.to(torch.float32).expand(n, *self.mean.shape).clone()
        assert self.std is not None
        eps = torch.randn((n, *self.mean.shape), generator=generator, dtype=torch.float64)
        pm1 = quantise_pm1(self.mean + self.std * eps)
        return ((pm1 + 1.0) * 0.5).clamp(0.0, 1.0).to(torch.float32)
