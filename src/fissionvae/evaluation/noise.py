"""Verdicts that allow for noise: a claim holds or fails only by more than the measured noise.

Every results page compares numbers: ours against the paper's ordering ("+D beats +L"), or two of
our models ("federated matches centralised"). A difference smaller than the noise of the two
numbers says nothing either way. This module holds the one rule every page uses.

- :class:`Measured` is a number with the half-width of its noise interval. The noise is whatever
  the page measured: a bootstrap interval over generated samples (:func:`bootstrap_fid`), the
  spread across training seeds, or the larger of the two.
- :func:`ordering_verdict` checks a claim "``a`` is lower (better) than ``b``". The gap ``b - a``
  is compared with the combined noise ``sqrt(hw_a^2 + hw_b^2)``: a gap within it is
  ``inconclusive``; outside it the claim is ``same`` (holds, as the paper says) or ``differs``.
- :func:`match_verdict` checks a claim "``a`` and ``b`` are the same" (Dugdale: federated matches
  centralised): ``same`` when the gap is within the noise *and* within ``tolerance`` (relative to
  the mean), ``differs`` when it exceeds the noise and the tolerance, else ``inconclusive``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fissionvae.evaluation.fid import FeatureStats

VERDICTS = ("same", "differs", "inconclusive")


@dataclass(frozen=True)
class Measured:
    """A measured value and the half-width of its noise interval (>= 0)."""

    value: float
    half_width: float

    def __post_init__(self) -> None:
        if not self.half_width >= 0:
            raise ValueError(f"noise half-width must be >= 0, got {self.half_width}")


def combined_noise(a: Measured, b: Measured) -> float:
    """Half-width of the noise on ``b.value - a.value`` for independent noises."""
    return math.hypot(a.half_width, b.half_width)


def ordering_verdict(a: Measured, b: Measured) -> str:
    """Verdict on the claim "a < b" (a is better when lower is better)."""
    gap = b.value - a.value
    if abs(gap) <= combined_noise(a, b):
        return "inconclusive"
    return "same" if gap > 0 else "differs"


def match_verdict(a: Measured, b: Measured, tolerance: float) -> str:
    """Verdict on the claim "a equals b", within ``tolerance`` relative to their mean."""
    gap, noise = abs(b.value - a.value), combined_noise(a, b)
    allowed = tolerance * abs(a.value + b.value) / 2
    if gap <= noise and gap <= allowed:
        return "same"
    if gap > noise and gap > allowed:
        return "differs"
    return "inconclusive"


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` interval of ``values`` (percentile method)."""
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap(
    statistic: Callable[[np.ndarray], float], n: int, reps: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over ``reps`` resamples of ``range(n)`` with replacement."""
    if reps < 2 or n < 2:
        raise ValueError(f"bootstrap needs n >= 2 and reps >= 2, got n={n}, reps={reps}")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(reps)])
    return percentile_interval(values, level)


def bootstrap_fid(
    generated: np.ndarray, reference: FeatureStats, reps: int = 50, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Bootstrap interval of FID over the generated samples' Inception features (rows), reference fixed.

    Each replicate is :func:`resampled_fid`: the same number as ``fid_from_stats`` of the resampled
    features' statistics, without a 2048 x 2048 eigendecomposition per replicate.
    """
    feats = np.asarray(generated, dtype=np.float64)
    projected = feats @ psd_sqrt(reference.sigma)
    return bootstrap(lambda idx: resampled_fid(feats[idx], projected[idx], reference), len(feats), reps, seed, level)


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh((sigma + sigma.T) / 2.0)
    return np.asarray((vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T)


def resampled_fid(feats: np.ndarray, projected: np.ndarray, reference: FeatureStats) -> float:
    """FID of features ``feats`` (N, D) against ``reference``, given ``projected = feats @ sqrt(reference.sigma)``.

    With ``A`` the centred features over ``sqrt(N - 1)`` (so their covariance is ``A^T A``), the
    nonzero spectrum of ``A^T A sigma_r`` is that of ``(A R)(A R)^T`` with ``R = sqrt(sigma_r)``:
    ``tr((sigma_g sigma_r)^(1/2))`` is the sum of the singular values of the centred ``projected``
    rows over ``sqrt(N - 1)``, an N x N (or D x D, the smaller) eigenproblem.
    """
    n = len(feats)
    mu = feats.mean(axis=0)
    centred = (projected - projected.mean(axis=0)) / math.sqrt(n - 1)
    gram = centred @ centred.T if n <= centred.shape[1] else centred.T @ centred
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(gram), 0.0, None)).sum())
    diff = mu - reference.mu
    trace_g = float(((feats - mu) ** 2).sum() / (n - 1))
    return float(diff @ diff + trace_g + np.trace(reference.sigma) - 2.0 * trace_sqrt)


def half_width(interval: tuple[float, float]) -> float:
    """Half the width of an interval."""
    return (interval[1] - interval[0]) / 2
