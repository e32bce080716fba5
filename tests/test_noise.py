"""The noise-aware verdict rule and the bootstrap interval."""

import numpy as np
import pytest

from fissionvae.evaluation.fid import feature_stats, fid_from_stats
from fissionvae.evaluation.noise import (
    Measured,
    bootstrap,
    bootstrap_fid,
    fid_of_rows,
    match_verdict,
    ordering_verdict,
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


def test_fid_of_rows_equals_the_covariance_route_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(3)
    reference = feature_stats(rng.normal(size=(200, 64)) @ rng.normal(size=(64, 64)))
    rows = rng.normal(loc=0.3, size=(40, 64)) @ rng.normal(size=(64, 64))  # rank 39 < 64: rank-deficient
    assert fid_of_rows(rows, reference) == pytest.approx(fid_from_stats(feature_stats(rows), reference), rel=1e-7)
    many = rng.normal(size=(300, 64))  # more rows than dimensions: the same identity holds
    assert fid_of_rows(many, reference) == pytest.approx(fid_from_stats(feature_stats(many), reference), rel=1e-7)
    with pytest.raises(ValueError, match="rows must be"):
        fid_of_rows(rows[:, :10], reference)


def test_bootstrap_fid_with_few_samples_matches_the_covariance_route():
    rng = np.random.default_rng(4)
    reference = feature_stats(rng.normal(size=(300, 32)))
    generated = rng.normal(loc=0.2, size=(20, 32))  # 20 < 32: the rows route
    fast = bootstrap_fid(generated, reference, reps=10, seed=5)
    slow = bootstrap(lambda idx: fid_from_stats(feature_stats(generated[idx]), reference), 20, 10, 5)
    assert fast == pytest.approx(slow, rel=1e-7)
