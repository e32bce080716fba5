"""(epsilon, delta) accounting with Opacus's accountants, as plain data the checkpoint can hold.

An accountant's state is its *history*: ``[noise_multiplier, sample_rate, steps]`` entries (the
state Opacus's RDP and PRV accountants keep). :func:`record` appends to a history, merging an entry
into the last one when (noise_multiplier, sample_rate) are equal: for RDP the merge is exact
(composition adds steps); for PRV Opacus composes the same steps either way. Histories are lists of
floats and ints, so they live in :class:`~fissionvae.federation.state.ServerState` and ``--resume``
continues the accounting exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

History = list[list[float]]  # [[noise_multiplier, sample_rate, steps], ...]


def record(history: History, noise_multiplier: float, sample_rate: float, steps: int) -> History:
    """``history`` with ``steps`` more steps of the subsampled Gaussian mechanism (a new list)."""
    if steps <= 0:
        return [list(e) for e in history]
    out = [list(e) for e in history]
    if out and out[-1][0] == noise_multiplier and out[-1][1] == sample_rate:
        out[-1][2] += steps
    else:
        out.append([float(noise_multiplier), float(sample_rate), int(steps)])
    return out


def epsilon(history: Sequence[Sequence[float]], delta: float, accountant: str = "rdp") -> float:
    """The epsilon at ``delta`` of the composed ``history``: 0 when empty, inf when any step had no noise."""
    if not history:
        return 0.0
    if any(e[0] == 0 for e in history):
        return math.inf
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    return float(acc.get_epsilon(delta=delta))


def noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The smallest noise multiplier (Opacus's search, to 0.01) giving at most ``target_epsilon`` after ``steps``."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    )
