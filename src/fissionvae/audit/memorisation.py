"""Memorisation of one group: how close the generated samples come to the training images.

For each generated sample: its distance to the nearest image of a seeded subset of the group's
training images and to the nearest image of as many held-out test images (equal sizes, so that
neither reference set is favoured by being larger). In pixel space (uint8 / 255,
Euclidean) and, when an extractor is given, in FID Inception feature space. Reported: summaries
of both distances, the nearest-neighbour ratio d_train / d_test (median; about 1 without
memorisation), the share of samples closer to a training image than to any test image (about
0.5 without memorisation) and the data-copying statistic C_T of Meehan et al. (:mod:`.stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fissionvae.audit.stats import data_copying_statistic, nearest
from fissionvae.seeding import numpy_rng
from fissionvae.viz import save_grid

#: a feature map: uint8 images (N, C, H, W) -> (N, D) float64 features
Features = Callable[[Tensor, str], np.ndarray]


def _summary(d: np.ndarray) -> dict:
    return {
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "p01": float(np.quantile(d, 0.01)),
        "min": float(d.min()),
    }


def equal_sizes(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded index subsets of the training and test references with equal sizes (the smaller of the two)."""
    n = min(n_train, n_test)
    train_idx = np.sort(numpy_rng(seed, "audit", 9, 0).permutation(n_train)[:n])
    test_idx = np.sort(numpy_rng(seed, "audit", 9, 1).permutation(n_test)[:n])
    return train_idx, test_idx


def space_report(train: np.ndarray, test: np.ndarray, generated: np.ndarray, cells: int, seed: int) -> dict:
    """Distances of ``generated`` (rows = points) to equal-sized ``train`` and ``test`` subsets, their ratio, and C_T.

    C_T uses all of ``train`` and ``test`` (the statistic does not need equal sizes; more test
    points make it sharper).
    """
    tr, te = equal_sizes(len(train), len(test), seed)
    to_train, _ = nearest(torch.from_numpy(generated), torch.from_numpy(train[tr]))
    to_test, _ = nearest(torch.from_numpy(generated), torch.from_numpy(test[te]))
    ratio = to_train / np.maximum(to_test, 1e-12)
    return {
        "generated": len(generated),
        "reference_images": len(tr),
        "nn_distance_train": _summary(to_train),
        "nn_distance_test": _summary(to_test),
        "nn_ratio_median": float(np.median(ratio)),
        "share_closer_to_train": float((to_train < to_test).mean()),
        "data_copying": data_copying_statistic(
            train, test, generated, cells, seed, min_generated=min(20, max(2, len(generated) // (2 * cells)))
        ),
    }


def pixels(images: Tensor) -> np.ndarray:
    """uint8 images -> (N, C*H*W) float64 in [0, 1]."""
    return images.flatten(1).double().div(255.0).numpy()


def memorisation_report(
    generated: Tensor, train: Tensor, test: Tensor, cells: int, seed: int, features: Features | None
) -> dict:
    """Pixel-space (and Inception, when ``features`` is given) memorisation report of one group (uint8 inputs)."""
    out = {"pixel": space_report(pixels(train), pixels(test), pixels(generated), cells, seed)}
    if features is not None:
        out["inception"] = space_report(
            features(train, "train"), features(test, "test"), features(generated, "generated"), cells, seed
        )
    return out


def copy_grid(generated: Tensor, train: Tensor, path: Path, pairs: int = 16) -> Path:
    """PNG of the ``pairs`` generated samples closest (pixels) to a training image, each beside that image.

    Four pairs per row: sample, its nearest training image, next sample, ...
    """
    dist, idx = nearest(generated.flatten(1).double(), train.flatten(1).double())
    order = np.argsort(dist, kind="stable")[:pairs]
    shown = torch.stack([im for i in order for im in (generated[i], train[idx[i]])]).float() / 255.0
    return save_grid(shown, path, nrow=8, scale=2)
