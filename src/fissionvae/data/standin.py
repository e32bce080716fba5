"""An offline RGB stand-in for CHARM: MNIST and FashionMNIST, padded to 32x32 and colourised.

**This is a stand-in, not CHARM.** It exists so that the RGB code path (conv models, Gaussian
and DLML likelihoods, RGB evaluation) can be demonstrated, tested and benchmarked on a machine
that has only MNIST and FashionMNIST. Its images are 32x32x3 like CHARM's, but far simpler.

``mnist-rgb`` and ``fashion-mnist-rgb``: each 28x28 grey image is padded by 2 pixels on every
side (to 32x32) and used as the alpha of a foreground colour over a background colour,
``pixel = bg * (1 - a) + fg * a`` with ``a = grey / 255``, rounded to uint8. Every image gets
its own colours, ``bg ~ U[0, 0.5]^3`` and ``fg ~ U[0.5, 1]^3``, drawn from a generator seeded
with (:data:`STANDIN_SEED`, dataset, split): the stand-in is a fixed dataset, the same for every
run and every subset (an image's colours do not depend on which other images are drawn).
"""

from __future__ import annotations

import numpy as np

STANDIN_SEED = 8032
BASE = {"mnist-rgb": "mnist", "fashion-mnist-rgb": "fashion-mnist"}
PAD = 2


def is_standin(dataset: str) -> bool:
    return dataset in BASE


def colour_table(dataset: str, split: str, n: int) -> np.ndarray:
    """(n, 2, 3) float64 colours: [:, 0] background, [:, 1] foreground, of the split's images."""
    rng = np.random.default_rng([STANDIN_SEED, list(BASE).index(dataset), ("train", "test").index(split)])
    bg = rng.uniform(0.0, 0.5, size=(n, 3))
    fg = rng.uniform(0.5, 1.0, size=(n, 3))
    return np.stack([bg, fg], axis=1)


def colourise(grey: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) and (N, 2, 3) colours -> uint8 (N, 3, 32, 32)."""
    a = np.pad(grey, ((0, 0), (PAD, PAD), (PAD, PAD))).astype(np.float32)[:, None] / 255.0
    bg = colours[:, 0, :, None, None].astype(np.float32)
    fg = colours[:, 1, :, None, None].astype(np.float32)
    return np.rint((bg * (1.0 - a) + fg * a) * 255.0).clip(0, 255).astype(np.uint8)


def standin_images(dataset: str, split: str, grey: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The stand-in images ``index`` of a split whose grey images are ``grey`` (all of them)."""
    return colourise(grey[index], colour_table(dataset, split, len(grey))[index])
