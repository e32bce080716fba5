"""Group-specific latent prior means (Table 4 of the FissionVAE paper).

Every strategy gives group j (0-based, in config order) the prior N(mu_j, I) on z1 with
mu_j a vector of length d (``latent_dim``), for k groups:

- ``identical``: mu_j = 0 (no latent decomposition; the FedVAE / +D prior).
- ``one-hot``: mu_j = e_j, a single 1 at dimension j (0-based; the paper's two-group 4-d
  example writes the ones at positions 1 and 2 counting from 1). Needs d >= k.
- ``symmetrical``: every entry +ceil((j+1)/2) for even j and -ceil((j+1)/2) for odd j, so
  groups 0, 1 get +1, -1 and groups 2, 3 get +2, -2 (the paper's groups 1, 2, 3, 4).
- ``random``: every entry ~ N(0, 1), drawn once from the run's seed (stored in the
  checkpoint, so a resumed run keeps it).
- ``wave``: 1 on dimensions [j*floor(d/k), (j+1)*floor(d/k)), 0 elsewhere; the last
  d - k*floor(d/k) dimensions stay 0 for every group. Needs d >= k.
- ``learnable``: no fixed prior (hierarchical models only); returns None.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fissionvae.config import PRIOR_STRATEGIES


def prior_means(strategy: str, num_groups: int, dim: int, seed: int = 0) -> Tensor | None:
    """Return the (num_groups, dim) matrix of prior means, or None for ``learnable``."""
    if strategy not in PRIOR_STRATEGIES:
        raise ValueError(f"unknown prior strategy {strategy!r}; choose one of {list(PRIOR_STRATEGIES)}")
    if strategy == "learnable":
        return None
    if strategy in ("one-hot", "wave") and dim < num_groups:
        raise ValueError(
            f"prior {strategy!r} needs latent dim >= number of groups, got dim={dim} for {num_groups} groups"
        )
    means = torch.zeros(num_groups, dim)
    for j in range(num_groups):
        if strategy == "one-hot":
            means[j, j] = 1.0
        elif strategy == "symmetrical":
            means[j] = math.ceil((j + 1) / 2) * (1.0 if j % 2 == 0 else -1.0)
        elif strategy == "wave":
            width = dim // num_groups
            means[j, j * width : (j + 1) * width] = 1.0
    if strategy == "random":
        means = torch.randn(num_groups, dim, generator=torch.Generator().manual_seed(seed))
    return means
