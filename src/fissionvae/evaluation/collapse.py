"""Mode collapse, measured: near-duplicate share and class coverage of generated images.

``fissionvae evaluate`` reports these for every model (``eval.json`` -> ``collapse``), so that
"collapsed" is a number with a stated threshold rather than an impression of a sample grid.

* **Near-duplicate share** (pixel space). For each image of a set, the Euclidean distance to its
  nearest *other* image of the set, divided by the set's median pairwise distance (a scale-free
  ratio, so that blur, which shrinks every distance of a set, is not by itself duplication). An
  image is a near-duplicate when that ratio is below :data:`DUPLICATE_RATIO` = 0.1. Measured on
  2,000 real Mixed MNIST test images (1,000 per group): not one is (the smallest ratio is 0.13,
  the median 0.46); 2,000 samples of short-trained FedVAE / FissionVAE+L+D runs: 0.0% / 0.7%.
  The same share on as many real test images (same group proportions) is reported beside it.
  At most ``max_images`` images per set (the first ones: samples are i.i.d.), because the cost
  is quadratic; ratios shrink as sets grow, so compare shares at equal set sizes.
* **Class coverage of the pool**: the domain classifier's predicted classes of all samples
  (every group's, pooled): entropy of their histogram over all classes divided by log(number of
  classes) (real test data: 0.999 on Mixed MNIST), the number of classes that receive at least a
  fifth of the uniform share, and the share of the pool predicted in each group's classes.

Verdict: ``collapsed`` is true when the pool's near-duplicate share is at least
:data:`DUPLICATE_LIMIT` (a tenth of the pool are copies of one another) or its normalised class coverage is below
:data:`COVERAGE_LIMIT` (e.g. a model that has dropped one of two equally sized groups entirely
scores log 10 / log 20 = 0.77); ``reasons`` says which criterion fired. Both limits are our
choice, stated here and in docs/evaluation.md.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from fissionvae.evaluation.shares import split_counts

DUPLICATE_RATIO = 0.1  # near-duplicate: nearest other image closer than this x the set's median pairwise distance
DUPLICATE_LIMIT = 0.10  # collapsed if at least this share of the pool is near-duplicate
COVERAGE_LIMIT = 0.80  # collapsed if the pool's normalised class coverage entropy is below this
COVERED_FRACTION = 0.2  # a class is "covered" with at least this fraction of the uniform share
MAX_IMAGES = 2000


def nn_ratios(images: Tensor) -> np.ndarray:
    """Per image: distance to the nearest other image / median pairwise distance of the set."""
    x = images.flatten(1).double() / (255.0 if images.dtype == torch.uint8 else 1.0)
    if x.shape[0] < 3:
        return np.full(x.shape[0], np.nan)
    d = torch.cdist(x, x)
    iu = torch.triu_indices(len(x), len(x), 1)
    median = d[iu[0], iu[1]].median()
    d.fill_diagonal_(float("inf"))
    nearest = d.min(1).values
    return (nearest / median).numpy() if median > 0 else np.zeros(len(x))


def near_duplicates(generated: list[Tensor], real: list[Tensor], max_images: int = MAX_IMAGES) -> dict:
    """Near-duplicate share of the generated images (several groups pooled) against real ones.

    ``generated[g]`` and ``real[g]`` are group g's samples and test images. Both sets take the
    first images of each group, at most ``max_images`` in all, in the generated set's group
    proportions.
    """
    sizes = [len(s) for s in generated]
    counts = split_counts(min(sum(sizes), max_images), sizes) if sum(sizes) else [0] * len(sizes)
    gen = torch.cat([s[:k] for s, k in zip(generated, counts, strict=True)])
    ref = torch.cat([r[:k] for r, k in zip(real, counts, strict=True)])
    gen_ratio, real_ratio = nn_ratios(gen), nn_ratios(ref)
    if len(gen_ratio) < 3 or len(real_ratio) < 3:
        return {"share": float("nan"), "threshold": DUPLICATE_RATIO, "images": len(gen), "real_images": len(ref)}
    return {
        "share": float((gen_ratio < DUPLICATE_RATIO).mean()),
        "real_share": float((real_ratio < DUPLICATE_RATIO).mean()),
        "threshold": DUPLICATE_RATIO,
        "median_ratio": float(np.median(gen_ratio)),
        "real_median_ratio": float(np.median(real_ratio)),
        "images": len(gen),
        "real_images": len(ref),
    }


def pool_coverage(pred_classes: np.ndarray, classifier) -> dict:
    """Class coverage of the pooled samples over *all* classes, and each group's share of the pool."""
    pred = np.asarray(pred_classes, dtype=np.int64)
    c = classifier.num_classes
    counts = np.bincount(pred, minlength=c)
    share = counts / max(1, counts.sum())
    nz = share[share > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return {
        "coverage_entropy_normalised": entropy / math.log(c) if c > 1 else 1.0,
        "classes_covered": int((share >= COVERED_FRACTION / c).sum()),
        "classes": c,
        "group_share": {
            name: float(share[list(classifier.group_classes(gi))].sum())
            for gi, name in enumerate(classifier.group_names)
        },
    }


def collapse_report(
    samples: list[Tensor], real: list[Tensor], group_names: list[str], pool: dict, max_images: int = MAX_IMAGES
) -> dict:
    """Near-duplicate shares (pool and per group), the pool's coverage and the verdict."""
    dup = near_duplicates(samples, real, max_images)
    per_group = {name: near_duplicates([samples[gi]], [real[gi]], max_images) for gi, name in enumerate(group_names)}
    reasons = []
    if dup["share"] >= DUPLICATE_LIMIT:
        reasons.append(f"near-duplicate share {dup['share']:.3f} >= {DUPLICATE_LIMIT}")
    if pool["coverage_entropy_normalised"] < COVERAGE_LIMIT:
        reasons.append(f"class coverage {pool['coverage_entropy_normalised']:.3f} < {COVERAGE_LIMIT}")
    return {
        "collapsed": bool(reasons),
        "reasons": reasons,
        "near_duplicates": dup,
        "near_duplicates_per_group": per_group,
        "coverage": pool,
        "criteria": f"collapsed if the pool's near-duplicate share (nearest-neighbour distance < {DUPLICATE_RATIO} x the median pairwise distance) >= {DUPLICATE_LIMIT} "
        f"or its normalised class coverage entropy < {COVERAGE_LIMIT} (real Mixed MNIST: 0.999)",
    }
