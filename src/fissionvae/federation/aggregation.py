"""Server-side aggregation: group-aware FedAvg (Eq. 1 of the paper), shared by every engine.

Each state-dict entry is averaged over the clients that sent it, weighted by their sample
counts. Because a client sends exactly the keys it owns (the encoder and its group's decoder
branch), this one rule gives: the encoder averaged over all participants, branch g averaged
over group g's participants only, and a branch nobody sent this round kept as it was.
Branches may have different shapes (heterogeneous decoders); each key is checked against
the global shape. Floating-point entries are accumulated in float64 in client-id order
(deterministic) and cast back; integer buffers (e.g. BatchNorm's ``num_batches_tracked``)
take the maximum over senders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fissionvae.federation.client import ClientResult


class InvalidUpdate(ValueError):
    """A client reply that must not be averaged in (wrong keys, shapes, dtypes, non-finite values)."""


def weighted_average(tensors: Sequence[Tensor], counts: Sequence[int], like: Tensor) -> Tensor:
    """Sample-count weighted mean (float entries) or max (integer entries), in ``like``'s dtype."""
    if not like.is_floating_point():
        return torch.stack(list(tensors)).amax(0).to(like.dtype)
    total = float(sum(counts))
    acc = torch.zeros(like.shape, dtype=torch.float64)
    for t, n in zip(tensors, counts, strict=True):
        acc += t.to(torch.float64) * (n / total)
    return acc.to(like.dtype)


def aggregate(global_weights: Mapping[str, Tensor], results: Sequence[ClientResult]) -> dict[str, Tensor]:
    """New global weights from the round's replies (replies are ordered by client id)."""
    ordered = sorted(results, key=lambda r: r.client_id)
    new = dict(global_weights)
    for key in sorted(set().union(*(r.weights.keys() for r in ordered))):
        senders = [r for r in ordered if key in r.weights]
        new[key] = weighted_average(
            [r.weights[key] for r in senders], [r.num_samples for r in senders], global_weights[key]
        )
    return new


def check_update(global_weights: Mapping[str, Tensor], allowed_keys: Sequence[str], result: ClientResult) -> None:
    """Raise InvalidUpdate unless ``result`` carries exactly ``allowed_keys`` with matching shapes/dtypes, all finite."""
    keys = set(result.weights)
    if keys != set(allowed_keys):
        raise InvalidUpdate(
            f"client {result.client_id}: keys differ from its owned keys (missing "
            f"{sorted(set(allowed_keys) - keys)[:3]}, unexpected {sorted(keys - set(allowed_keys))[:3]})"
        )
    if result.num_samples <= 0:
        raise InvalidUpdate(f"client {result.client_id}: num_samples must be positive, got {result.num_samples}")
    for key in sorted(keys):
        got, want = result.weights[key], global_weights[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise InvalidUpdate(
                f"client {result.client_id}: {key} is {tuple(got.shape)}/{got.dtype}, expected "
                f"{tuple(want.shape)}/{want.dtype}"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise InvalidUpdate(f"client {result.client_id}: {key} has non-finite values")
