"""Splitting a count over groups in proportion to their sizes (samples per group, capped subsets).

Its own module so that :mod:`fissionvae.evaluation.evaluate` and
:mod:`fissionvae.evaluation.collapse` both use it without importing each other.
"""

from __future__ import annotations

import math


def split_counts(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainders; sums exactly)."""
    exact = [total * s / sum(sizes) for s in sizes]
    counts = [math.floor(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: exact[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts
