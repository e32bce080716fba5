"""Randomness as a pure function of (run seed, stream, keys...).

Every random choice draws from its own stream: model initialisation, data subsets and
partitions, per-round participation, each (round, client) local update, evaluation and
sampling. A round's cohort or a client's shuffling can therefore be recomputed anywhere
(another process, another machine, a resumed run) without carrying RNG state around.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {
    "init": 0,
    "subset": 1,
    "partition": 2,
    "participation": 3,
    "client": 4,
    "eval": 5,
    "sample": 6,
    "prior": 7,
    "privacy": 8,  # DP noise: (0, round, client) at a client, (1, round) at the server
    "audit": 9,  # fissionvae audit: subsets, posterior draws, k-means (docs/privacy-audit.md)
}


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A 63-bit integer seed derived from (seed, stream, *keys) with numpy's SeedSequence."""
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; known: {sorted(STREAMS)}")
    state = np.random.SeedSequence([int(seed), STREAMS[stream], *map(int, keys)]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def numpy_rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, stream, *keys))


def torch_generator(seed: int, stream: str, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, stream, *keys))
