"""The noise of an evaluated run's numbers, for the noise-aware verdicts of evaluation.noise.

- FID: a bootstrap interval over the run's generated samples (their Inception features, read back
  from the evaluation's feature cache, so nothing is extracted twice), the real statistics fixed.
  With several groups the generated rows are pooled and resampled together against the pooled
  real statistics (the overall FID's definition), not per group.
- NLL: the 95% normal interval of the mean per-image negative ELBO over the test images
  (1.96 standard errors), a between-image spread; two models on the same test images are
  compared unpaired, which is conservative.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch

from fissionvae.data.federated import GroupData
from fissionvae.evaluation.evaluate import pooled_stats, to_uint8
from fissionvae.evaluation.fid import StatsCache
from fissionvae.evaluation.noise import Measured, bootstrap_fid, half_width
from fissionvae.models.vae import FissionVAE
from fissionvae.seeding import torch_generator

BOOTSTRAP_REPS = 50  # the bootstrap_fid default; each replicate is one 2048-d matrix square root
Z95 = 1.959964


class MissingFeatures(FileNotFoundError):
    """The evaluation's cached Inception features (or real statistics) of a run are not there."""


def generated_features(run_path: Path, result: dict, groups: int) -> np.ndarray:
    """The generated samples' Inception features that ``evaluate`` cached for this eval.json (all groups)."""
    identity = result["fid"]["extractor"]
    want = result["fid"]["generated"]
    for tag_dir in sorted((run_path / "eval" / "cache").glob("*")):
        if tag_dir.name.startswith("nll-") or not (tag_dir / "features").is_dir():
            continue
        parts = []
        for gi in range(groups):
            key = hashlib.sha256(f"{tag_dir.name}|{gi}|{identity}".encode()).hexdigest()
            parts += [np.load(p) for p in sorted((tag_dir / "features").glob(f"{key[:24]}-*.npy"))]
        if parts and sum(len(p) for p in parts) == want:
            return np.concatenate(parts).astype(np.float64)
    raise MissingFeatures(f"{run_path}: no cached Inception features of {want} generated images; run evaluate again")


def fid_measured(
    run_path: Path, result: dict, groups: list[GroupData], seed: int = 0, reps: int = BOOTSTRAP_REPS
) -> Measured:
    """The run's overall FID with the half-width of its bootstrap 95% interval."""
    cache, identity = StatsCache(), result["fid"]["extractor"]
    real = []
    for g in groups:
        stats = cache.load(f"{g.dataset}-test", cache.key(to_uint8(g.test_images), identity))
        if stats is None:
            raise MissingFeatures(f"{run_path}: the real statistics of {g.name} are not cached; run evaluate again")
        real.append(stats)
    feats = generated_features(run_path, result, len(groups))
    interval = bootstrap_fid(feats, pooled_stats(real), reps=reps, seed=seed)
    return Measured(result["fid"]["overall"], half_width(interval))


@torch.no_grad()
def neg_elbo_half_width(model: FissionVAE, groups: list[GroupData], seed: int) -> float:
    """1.96 standard errors of the mean per-image negative ELBO over every group's test images."""
    model.eval()
    generator = torch_generator(seed, "eval", 10**6)
    values = []
    for gi, g in enumerate(groups):
        for x in g.test_images.split(500):
            terms = model.terms(x, torch.full((len(x),), gi, dtype=torch.int64), generator)
            values.append(terms["neg_elbo"].double())
    v = torch.cat(values)
    return Z95 * v.std().item() / math.sqrt(len(v))
