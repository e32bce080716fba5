"""Update-norm clipping: the one clip that robust aggregation and client-level DP share.

A client replies with weights for the keys it owns (the encoder and its group's branch). Its
*update* is the difference from the global weights it was sent. :func:`clip_update` measures the
L2 norm of that whole update (all floating-point entries together, so the encoder delta and the
branch delta share one budget) and, when it exceeds ``max_norm``, scales the update down to
``max_norm``. Integer buffers (BatchNorm's ``num_batches_tracked``) are not part of the update and
pass through unchanged. The norm is accumulated in float64 in sorted key order (deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


def update_norm(global_weights: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> float:
    """L2 norm of ``weights - global_weights`` over the floating-point entries of ``weights``."""
    total = torch.zeros((), dtype=torch.float64)
    for key in sorted(weights):
        value = weights[key]
        if value.is_floating_point():
            total += (value.to(torch.float64) - global_weights[key].to(torch.float64)).pow(2).sum()
    return math.sqrt(float(total))


def clip_update(
    global_weights: Mapping[str, Tensor], weights: Mapping[str, Tensor], max_norm: float
) -> tuple[dict[str, Tensor], float]:
    """``weights`` with its update scaled to norm at most ``max_norm``, and the update's original norm.

    ``max_norm = inf`` returns the weights unchanged (the same tensors), so a run with clipping
    switched off is bit-identical to one without it.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    norm = update_norm(global_weights, weights)
    if norm <= max_norm or math.isinf(max_norm):
        return dict(weights), norm
    scale = max_norm / norm
    clipped = {}
    for key, value in weights.items():
        if value.is_floating_point():
            base = global_weights[key].to(torch.float64)
            clipped[key] = (base + (value.to(torch.float64) - base) * scale).to(value.dtype)
        else:
            clipped[key] = value
    return clipped, norm
