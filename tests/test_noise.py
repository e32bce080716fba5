"""The noise-aware verdict rule and the bootstrap interval."""

import numpy as np
import pytest

from fissionvae.evaluation.fid import feature_stats, fid_from_stats
from fissionvae.evaluation.noise import Measured, bootstrap_fid, match_verdict, ordering_verdict


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
