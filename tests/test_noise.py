"""The noise-aware verdict rule and the bootstrap interval."""

import numpy as np
import pytest

from fissionvae.evaluation.fid import feature_stats, fid_from_stats
from fissionvae.evaluation.noise import (
    Measured,
    bootstrap,
    bootstrap_fid,
    match_verdict,
    ordering_verdict,
    psd_sqrt,
    resampled_fid,
)


def test_ordering_verdict_needs_a_gap_beyond_the_combined_noise():
    # combined noise of two half-widths 3 and 4 is 5
    assert ordering_verdict(Measured(10.0, 3.0), Measured(15.5, 4.0)) == "same"
    assert ordering_verdict(Measured(10.0, 3.0), Measured(14.9, 4.0)) == "inconclusive"
    assert ordering_verdict(Measured(15.5, 3.0), Measured(10.0, 4.0)) == "differs"


def test_match_verdict_needs_both_noise_and_tolerance():
    assert match_verdict(Measured(100.0, 2.0), Measured(101.0, 2.0), tolerance=0.05) == "same"
    assert match_verdict(Measured(100.0, 1.0), Measured(120.0, 1.0), tolerance=0.05) == "differs"
    # within the noise but the noise is wider than the tolerance: cannot say
    assert match_verdict(Measured(100.0, 20.0), Measured(110.0, 20.0), tolerance=0.05) == "inconclusive"


def test_measured_refuses_negative_noise():
    with pytest.raises(ValueError, match="half-width"):
        Measured(1.0, -0.1)


def test_bootstrap_fid_interval_brackets_the_point_estimate():
    rng = np.random.default_rng(0)
    reference = feature_stats(rng.normal(size=(400, 4)))
    generated = rng.normal(loc=0.5, size=(300, 4))
    point = fid_from_stats(feature_stats(generated), reference)
    lo, hi = bootstrap_fid(generated, reference, reps=40, seed=1)
    assert lo < point < hi
    assert hi - lo < point  # a real interval, not the whole line
    assert bootstrap_fid(generated, reference, reps=40, seed=1) == (lo, hi)  # seeded


@pytest.mark.parametrize("n,d", [(30, 64), (200, 16)])  # fewer samples than features (the evaluation's case), and more
def test_resampled_fid_equals_the_frechet_distance_of_the_resampled_statistics(n, d):
    rng = np.random.default_rng(3)
    reference = feature_stats(rng.normal(size=(500, d)) @ rng.normal(size=(d, d)))
    feats = rng.normal(loc=0.3, size=(n, d)) @ rng.normal(size=(d, d))
    projected = feats @ psd_sqrt(reference.sigma)
    for _ in range(3):
        idx = rng.integers(0, n, size=n)  # a bootstrap resample, repeated rows and all
        want = fid_from_stats(feature_stats(feats[idx]), reference)
        assert resampled_fid(feats[idx], projected[idx], reference) == pytest.approx(want, rel=1e-8)


def test_bootstrap_fid_matches_the_replicates_computed_the_direct_way():
    rng = np.random.default_rng(4)
    reference = feature_stats(rng.normal(size=(300, 24)))
    generated = rng.normal(loc=0.2, size=(40, 24))
    fast = bootstrap_fid(generated, reference, reps=25, seed=7)
    direct = bootstrap(lambda idx: fid_from_stats(feature_stats(generated[idx]), reference), 40, 25, 7)
    assert fast == pytest.approx(direct, rel=1e-8)


def test_bootstrap_fid_interval_sits_above_the_point_estimate_of_a_close_model():
    """Why the page says a paper-scale FID may lie just below its own interval: a resample repeats about a
    third of the rows, fewer distinct samples raise FID, and for a model close to the reference that bias
    is larger than the interval's half-width. Only the half-width is used as noise."""
    rng = np.random.default_rng(0)
    reference = feature_stats(rng.normal(size=(5000, 32)))
    generated = rng.normal(loc=0.1, size=(1000, 32))
    point = fid_from_stats(feature_stats(generated), reference)
    lo, hi = bootstrap_fid(generated, reference, reps=50, seed=0)
    assert point < lo and (lo + hi) / 2 - point > (hi - lo) / 2
