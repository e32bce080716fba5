"""Negative log-likelihood on test images: the negative ELBO and an importance-weighted bound.

Units: nats per image, nats per dimension (divided by C*H*W) and bits per dimension (nats/dim
divided by ln 2). The paper's "NLL" column (Table 3: 0.18-0.30 on Mixed MNIST) is of the size of
our negative ELBO in nats per dimension (pixel), which is what we put beside it; the paper does
not state its units. With the Bernoulli likelihood on grey intensities, "NLL" is the BCE-based
negative log-likelihood, as in the paper, not a density over [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.evaluation.elbo import mean_terms
from fissionvae.models.protocol import LatentVariableModel


def per_dim(nats_per_image: float, dims: int) -> dict[str, float]:
    """nats/image -> {nats_per_image, nats_per_dim, bits_per_dim}."""
    return {
        "nats_per_image": nats_per_image,
        "nats_per_dim": nats_per_image / dims,
        "bits_per_dim": nats_per_image / dims / math.log(2),
    }


@torch.inference_mode()
def iw_nll(
    model: LatentVariableModel,
    images: Tensor,
    group: int,
    k: int,
    generator: torch.Generator,
    batch_size: int = 500,
    progress: bool = False,
) -> float:
    """Mean over images of -log (1/K sum_k w_k): the importance-weighted NLL bound, nats/image.

    Runs in eval mode and restores the model's previous mode afterwards.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = 0.0
    try:
        for start in tqdm(
            range(0, images.shape[0], batch_size), desc=f"IW-NLL K={k}", leave=False, disable=not progress
        ):
            x = images[start : start + batch_size].to(device)
            logw = model.log_importance_weights(
                x, torch.full((x.shape[0],), group, dtype=torch.int64, device=device), k, generator
            )
            total += float(-(torch.logsumexp(logw.double(), 0) - math.log(k)).sum())
    finally:
        model.train(was_training)
    return total / images.shape[0]


def nll_report(
    model: LatentVariableModel, images: Tensor, group: int, k: int, generator: torch.Generator, progress: bool = False
) -> dict:
    """Negative ELBO (Eq. 3 / Eq. 9) and the K-sample importance-weighted bound for one group."""
    dims = math.prod(images.shape[1:])
    neg_elbo = mean_terms(model, images, torch.full((images.shape[0],), group, dtype=torch.int64), generator)[
        "neg_elbo"
    ]
    return {
        "images": int(images.shape[0]),
        "neg_elbo": per_dim(neg_elbo, dims),
        "iw": per_dim(iw_nll(model, images, group, k, generator, progress=progress), dims) | {"k": k},
    }


def pooled(reports: list[dict]) -> dict:
    """Image-weighted mean of several groups' reports (the overall NLL)."""
    n = sum(r["images"] for r in reports)
    out: dict = {"images": n}
    for kind in ("neg_elbo", "iw"):
        out[kind] = {
            unit: sum(r[kind][unit] * r["images"] for r in reports) / n
            for unit in ("nats_per_image", "nats_per_dim", "bits_per_dim")
        }
    out["iw"]["k"] = reports[0]["iw"]["k"]
    return out
