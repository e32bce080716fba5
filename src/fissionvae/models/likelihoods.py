"""Pixel likelihoods p(x | decoder output), pluggable by name.

A likelihood turns the decoder's raw output (``param_channels`` channels per image channel)
into per-image negative log-likelihoods in nats, a mean image and a sampled image. It is an
``nn.Module`` living inside its decoder branch, so a likelihood with parameters (e.g. a
shared learned variance) is trained and aggregated with that branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Likelihood(nn.Module):
    """Interface: ``nll(params, x)`` -> (B,) nats; ``mean(params)``, ``sample(params, g)`` -> images in [0, 1]."""

    param_channels: int = 1

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError


class Bernoulli(Likelihood):
    """Bernoulli on [0, 1] intensities: BCE with logits, summed per image.

    Grey intensities are used as soft targets (no binarisation), as in the paper's BCE.
    Generation grids show the mean, sigmoid(logits).
    """

    param_channels = 1

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


LIKELIHOODS: dict[str, type[Likelihood]] = {"bernoulli": Bernoulli}


def build_likelihood(name: str) -> Likelihood:
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name]()
