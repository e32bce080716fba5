"""Per-round client participation: an independent Bernoulli(p) draw per client.

The cohort of round r is a pure function of (seed, r), so it can be recomputed anywhere.
If nobody is drawn (probability (1-p)^N; about 1e-6 for the paper's 20 clients at p = 0.5)
the round is *empty*: no client trains, the global weights are unchanged, the round
counter advances and the metrics line says ``participants: 0``. Re-drawing would bias the
participation rate the config states, so we do not.
"""

from __future__ import annotations

from fissionvae.seeding import numpy_rng


def sample_participants(seed: int, round_index: int, num_clients: int, p: float) -> list[int]:
    """Sorted ids of the clients taking part in round ``round_index`` (0-based)."""
    if p >= 1.0:
        return list(range(num_clients))
    draws = numpy_rng(seed, "participation", round_index).random(num_clients)
    return [i for i in range(num_clients) if draws[i] < p]
