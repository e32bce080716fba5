"""The evaluation's generated images: drawn from their own seeded stream, as uint8."""

from __future__ import annotations

import torch
from torch import Tensor

from fissionvae.evaluation.options import EvalOptions
from fissionvae.models.protocol import GenerativeModel, LatentVariableModel
from fissionvae.seeding import torch_generator


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 with rounding (as a saved PNG would hold them)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.inference_mode()
def generate(
    model: GenerativeModel,
    group: int,
    n: int,
    seed: int,
    pathway: str | None,
    batch: int = 1000,
    prior_group: int | None = None,
) -> Tensor:
    """``n`` uint8 samples of ``group`` from the evaluation's own stream (deterministic).

    The stream does not depend on ``prior_group``: a prior-swapped evaluation draws the same noise
    as the unswapped one, so Figure 10's two conditions differ only in the prior.
    """
    g = torch_generator(seed, "sample", 1000 + group, 0)
    parts = [model.sample(group, min(batch, n - i), g, pathway, prior_group).cpu() for i in range(0, n, batch)]
    return to_uint8(torch.cat(parts)) if parts else torch.zeros(0, *model.image_shape, dtype=torch.uint8)


def prior_partners(model: GenerativeModel, opts: EvalOptions) -> list[int | None]:
    """Per group, the group whose z1 prior its samples draw from (None: its own; see ``prior_swap``)."""
    k = model.num_groups
    if not opts.prior_swap:
        return [None] * k
    if not isinstance(model, LatentVariableModel):
        raise ValueError(f"prior_swap: a {model.kind} model has no group priors to swap")
    pathway = opts.pathway or model.default_pathway()
    if k < 2 or pathway == "z2" or not model.has_fixed_prior:
        raise ValueError(
            "prior_swap needs two or more groups, fixed z1 priors and a pathway that samples z1 from them "
            f"('z1-z2-z1' or 'z1'); got {k} group(s), fixed priors {model.has_fixed_prior}, pathway {pathway!r}"
        )
    return [(g + 1) % k for g in range(k)]
