"""Loss terms on held-out images, with the very same ``terms`` the model trains on."""

from __future__ import annotations

import torch
from torch import Tensor

from fissionvae.models.protocol import GenerativeModel


@torch.inference_mode()
def mean_terms(
    model: GenerativeModel, images: Tensor, group_ids: Tensor, generator: torch.Generator, batch_size: int = 1000
) -> dict[str, float]:
    """Per-image means of every named term (nats/image) over ``images``, one z sample each."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    device = next(model.parameters()).device
    try:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            terms = model.terms(batch, group_ids[start : start + batch_size].to(device), generator)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.double().sum())
    finally:
        model.train(was_training)
    return {name: total / images.shape[0] for name, total in sums.items()}
