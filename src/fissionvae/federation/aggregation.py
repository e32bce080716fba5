"""Server-side aggregation, shared by every engine: group-aware FedAvg (Eq. 1 of the paper) or a robust rule.

Each state-dict entry is merged over the clients that sent it. Because a client sends exactly the
keys it owns (the encoder and its group's decoder branch), this one rule gives: the encoder merged
over all participants, branch g merged over group g's participants only, and a branch nobody sent
this round kept as it was. Branches may have different shapes (heterogeneous decoders); replies
are checked against the global shapes first (:mod:`.replies`).

:class:`AggregationRule` (from ``federation.aggregator``, ``trim_fraction``, ``clip_norm``) says how:

- ``fedavg`` (default, the papers'): the sample-count weighted mean, accumulated in float64 in
  client-id order (deterministic) and cast back; integer buffers (BatchNorm's
  ``num_batches_tracked``) take the maximum over senders.
- ``trimmed_mean``: per coordinate, sort the senders' values, drop ``floor(trim_fraction * n)`` at
  each end, take the unweighted mean of the rest.
- ``median``: per coordinate, the median of the senders' values (the mean of the two middle
  values for an even count).
  Both robust rules are unweighted (a weighted order statistic would let a client's share of the
  data buy influence; partitions are near-equal anyway) and take the lower median of integer buffers.
- ``clip_norm``: before merging, each reply's update (its weights minus the global weights, all
  its floating-point entries together) is scaled to L2 norm at most ``clip_norm`` with the shared
  :func:`~fissionvae.federation.clipping.clip_update`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fissionvae.federation.client import ClientResult
from fissionvae.federation.clipping import clip_update


@dataclass(frozen=True)
class AggregationRule:
    """How accepted replies are merged (see the module docstring); the default is plain FedAvg."""

    aggregator: Literal["fedavg", "trimmed_mean", "median"] = "fedavg"
    trim_fraction: float = 0.1
    clip_norm: float | None = None

    @classmethod
    def from_config(cls, federation) -> AggregationRule:  # a FederationConfig
        return cls(federation.aggregator, federation.trim_fraction, federation.clip_norm)


FEDAVG = AggregationRule()


def weighted_average(tensors: Sequence[Tensor], counts: Sequence[int], like: Tensor) -> Tensor:
    """Sample-count weighted mean (float entries) or max (integer entries), in ``like``'s dtype."""
    if not like.is_floating_point():
        return torch.stack(list(tensors)).amax(0).to(like.dtype)
    total = float(sum(counts))
    acc = torch.zeros(like.shape, dtype=torch.float64)
    for t, n in zip(tensors, counts, strict=True):
        acc += t.to(torch.float64) * (n / total)
    return acc.to(like.dtype)


def trimmed_mean(tensors: Sequence[Tensor], trim_fraction: float, like: Tensor) -> Tensor:
    """Coordinate-wise mean after dropping ``floor(trim_fraction * n)`` values at each end, in ``like``'s dtype."""
    k = math.floor(trim_fraction * len(tensors))
    stacked = torch.stack([t.to(torch.float64) for t in tensors]).sort(0).values
    return stacked[k : len(tensors) - k].mean(0).to(like.dtype)


def coordinate_median(tensors: Sequence[Tensor], like: Tensor) -> Tensor:
    """Coordinate-wise median (mean of the two middle values for an even count; lower median for integers)."""
    stacked = torch.stack(list(tensors))
    if not like.is_floating_point():
        return stacked.median(0).values.to(like.dtype)
    ordered = stacked.to(torch.float64).sort(0).values
    n = len(tensors)
    return ((ordered[(n - 1) // 2] + ordered[n // 2]) / 2).to(like.dtype)


def merge(tensors: Sequence[Tensor], counts: Sequence[int], like: Tensor, rule: AggregationRule) -> Tensor:
    """One entry's new global value from its senders' values under ``rule``."""
    if rule.aggregator == "fedavg":
        return weighted_average(tensors, counts, like)
    if rule.aggregator == "median":
        return coordinate_median(tensors, like)
    if not like.is_floating_point():
        return coordinate_median(tensors, like)
    return trimmed_mean(tensors, rule.trim_fraction, like)


def aggregate(
    global_weights: Mapping[str, Tensor], results: Sequence[ClientResult], rule: AggregationRule = FEDAVG
) -> dict[str, Tensor]:
    """New global weights from the round's accepted replies (merged in client-id order)."""
    ordered = sorted(results, key=lambda r: r.client_id)
    sent = [
        r.weights if rule.clip_norm is None else clip_update(global_weights, r.weights, rule.clip_norm)[0]
        for r in ordered
    ]
    new = dict(global_weights)
    for key in sorted(set().union(*(w.keys() for w in sent))):
        senders = [(w[key], r.num_samples) for w, r in zip(sent, ordered, strict=True) if key in w]
        new[key] = merge([t for t, _ in senders], [n for _, n in senders], global_weights[key], rule)
    return new
