"""Client-level DP-FedAvg: one joint clip per client, Gaussian noise on every aggregated sum.

Each accepted reply's update (its encoder delta and its branch delta together) is clipped to L2
norm ``C`` with the shared :func:`~fissionvae.federation.clipping.clip_update`. Every state-dict
entry ``k`` that some client owns is then released as

    new[k] = global[k] + (sum of the clipped deltas of this round's senders of k + N(0, (sigma C)^2 I)) / W_k

with the fixed denominator ``W_k = q * (number of clients owning k)`` (q = participation): the
expected number of senders, as in McMahan et al. (2018). Clients are weighted equally, not by
their reported sample counts (a count is client data and a client could inflate it); the
denominator does not depend on who took part. Every sum gets noise every round, also a branch
nobody of its group sent this round and an empty round, so the output never reveals that a sum
had no senders.

Why one clip plus per-sum noise is one Gaussian mechanism: a client contributes to exactly the
sums of the keys it owns (the encoder's and its group's branch's). Concatenate all sums into one
vector S. Adding or removing one client changes S by that client's clipped update, whose L2 norm
over *all* its keys is at most C: the L2 sensitivity of S is C. Independent N(0, sigma^2 C^2) noise
on every coordinate of every sum is N(0, sigma^2 C^2 I) on S: the Gaussian mechanism with noise
multiplier sigma. Dividing by the fixed W_k and adding the public global weights is post-processing.
With Bernoulli(q) participation (Poisson subsampling of clients) the accountant composes the
subsampled Gaussian mechanism once per round.

Integer entries (BatchNorm's ``num_batches_tracked``) are not released: they keep the global value.
The arithmetic runs in float64 in client-id order; with noise 0, an infinite clip, participation 1
and equal-sized clients the result is bit-identical to :func:`~fissionvae.federation.aggregation.aggregate`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fissionvae.federation.clipping import clip_update


def dp_fedavg(
    global_weights: Mapping[str, Tensor],
    updates: Sequence[tuple[int, Mapping[str, Tensor]]],
    owners: Mapping[str, int],
    participation: float,
    noise_multiplier: float,
    clip_norm: float,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """New global weights from ``updates`` ((client id, weights it sent), any order).

    ``owners`` maps every key some client owns to the number of clients owning it.
    """
    clipped = [
        clip_update({k: global_weights[k] for k in w}, w, clip_norm)[0] for _, w in sorted(updates, key=lambda u: u[0])
    ]
    new = dict(global_weights)
    std = noise_multiplier * clip_norm if noise_multiplier > 0 else 0.0  # 0 * inf would be nan
    for key in sorted(owners):
        like = global_weights[key]
        if not like.is_floating_point():
            continue
        expected = participation * owners[key]
        senders = [c[key] for c in clipped if key in c]
        acc = torch.zeros(like.shape, dtype=torch.float64)
        for t in senders:
            acc += t.to(torch.float64) * (1.0 / expected)
        if len(senders) != expected:  # the global weights' share: (W - k) / W of them
            acc += like.to(torch.float64) * ((expected - len(senders)) / expected)
        if std > 0:
            acc += torch.normal(0.0, std, like.shape, generator=generator, dtype=torch.float64) / expected
        new[key] = acc.to(like.dtype)
    return new
