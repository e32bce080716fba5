"""Diagonal Gaussians with closed-form KL divergences, sampled with explicit generators."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class DiagGaussian:
    """N(mean, diag(exp(logvar))) over the last dimension; batch dimensions in front."""

    mean: Tensor
    logvar: Tensor

    def rsample(self, generator: torch.Generator) -> Tensor:
        """Reparameterised sample mean + sigma * eps, eps drawn from ``generator`` (required: no hidden global RNG)."""
        # drawn on the generator's device (the seeded streams are CPU generators), then moved
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=generator.device)
        eps = eps.to(self.mean.device)
        return self.mean + torch.exp(0.5 * self.logvar) * eps

    def kl(self, other: DiagGaussian) -> Tensor:
        """KL(self || other), summed over the last dimension."""
        var_ratio = torch.exp(self.logvar - other.logvar)
        diff2 = (self.mean - other.mean) ** 2 * torch.exp(-other.logvar)
        return 0.5 * (var_ratio + diff2 - 1.0 - (self.logvar - other.logvar)).sum(-1)

    def kl_to_unit(self, prior_mean: Tensor | float = 0.0) -> Tensor:
        """KL(self || N(prior_mean, I)) = 1/2 sum(s^2 + (mu - m)^2 - 1 - log s^2)."""
        return 0.5 * (torch.exp(self.logvar) + (self.mean - prior_mean) ** 2 - 1.0 - self.logvar).sum(-1)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; mean, diag(var)) summed over the last dimension."""
        return -0.5 * (math.log(2 * math.pi) + self.logvar + (z - self.mean) ** 2 * torch.exp(-self.logvar)).sum(-1)


def unit_gaussian_log_prob(z: Tensor, mean: Tensor | float = 0.0) -> Tensor:
    """log N(z; mean, I) summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + (z - mean) ** 2).sum(-1)


def explicit_generator(generator: torch.Generator | None) -> torch.Generator:
    """``generator``, or torch's global CPU generator when it is None.

    The None case is for interactive use (``model.sample("fashion", 16)``); library code always
    passes a seeded stream of :mod:`fissionvae.seeding`. Drawing from ``torch.default_generator``
    gives the same numbers as passing ``generator=None`` to torch on the CPU.
    """
    return torch.default_generator if generator is None else generator
