"""Inception Score from any classifier's logits or class probabilities.

``IS = exp(E_x KL(p(y|x) || p(y)))`` computed on ``splits`` chunks of the samples, reporting the
mean and numpy's population standard deviation over chunks, as the reference implementations do.

The rows are **shuffled with a fixed seed** (:data:`SHUFFLE_SEED`) before they are cut into
contiguous chunks (chunk ``k`` holds shuffled rows ``k N // splits`` to ``(k + 1) N //
splits``), as torchmetrics and torch-fidelity do.  Without it a pool concatenated group by group
puts each group in its own chunks: no chunk holds both domains, so a model that keeps its groups
apart scores as if the pool had one group's classes (about 10 of 20 on Mixed MNIST) while a model
that blends them scores near 20, the opposite of what the score should say.  ``shuffle_seed=None``
keeps the given order (for tests of the split arithmetic).

The FID Inception network of this project has no classification layer, so the score is
computed with another classifier (e.g. :class:`fissionvae.evaluation.classifier.DomainClassifier`);
values are comparable only between runs that use the same classifier and sample count.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import log_softmax, xlogy
from torch import nn

from fissionvae.seeding import numpy_rng

ImageArray = np.ndarray | torch.Tensor
SHUFFLE_SEED = 0  # the fixed permutation: numpy_rng(SHUFFLE_SEED, "eval", _SHUFFLE_KEY, N)
_SHUFFLE_KEY = 1_000_010


def _looks_like_probs(values: np.ndarray) -> bool:
    """Return True when every row is non-negative and sums to 1 (within 1e-4)."""
    return bool(values.min() >= 0.0 and np.allclose(values.sum(axis=1), 1.0, atol=1e-4))


def to_probs(logits_or_probs: np.ndarray | torch.Tensor, is_probs: bool | None = None) -> np.ndarray:
    """Return class probabilities (float64, N x K) from logits or probabilities.

    Parameters
    ----------
    logits_or_probs
        N x K array.
    is_probs
        True: rows are probabilities already; False: rows are logits (softmaxed);
        None: treat as probabilities when all rows are non-negative and sum to 1.

    Returns
    -------
    numpy.ndarray
        N x K probabilities.
    """
    values = np.asarray(torch.as_tensor(logits_or_probs).detach().cpu().double().numpy())
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"expected an N x K array with N >= 1; got shape {values.shape}")
    if is_probs is None:
        is_probs = _looks_like_probs(values)
    return values if is_probs else np.exp(log_softmax(values, axis=1))


def _split_score(probs: np.ndarray) -> float:
    """Return exp of the mean KL(p(y|x) || p(y)) within one chunk (0 log 0 = 0)."""
    marginal = probs.mean(axis=0, keepdims=True)
    kl = xlogy(probs, probs) - xlogy(probs, marginal)
    return float(np.exp(kl.sum(axis=1).mean()))


def inception_score(
    logits_or_probs: np.ndarray | torch.Tensor,
    splits: int = 10,
    *,
    is_probs: bool | None = None,
    shuffle_seed: int | None = SHUFFLE_SEED,
) -> tuple[float, float]:
    """Inception Score of a set of predictions.

    Parameters
    ----------
    logits_or_probs
        N x K classifier logits or probabilities (see :func:`to_probs`).
    splits
        Number of chunks; N must be at least ``splits``.
    is_probs
        Whether the rows are probabilities; None guesses (see :func:`to_probs`).
    shuffle_seed
        Seed of the permutation applied before chunking (a function of the seed and N only, so
        the score is deterministic); None keeps the rows in order.

    Returns
    -------
    tuple of float
        Mean and population standard deviation of the per-chunk scores.  Equals K for
        confident predictions spread evenly over K classes in every chunk, and 1 for
        identical predictions.
    """
    probs = to_probs(logits_or_probs, is_probs)
    n = probs.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need 1 <= splits <= number of samples; got splits={splits}, N={n}")
    if shuffle_seed is not None:
        probs = probs[numpy_rng(shuffle_seed, "eval", _SHUFFLE_KEY, n).permutation(n)]
    scores = [_split_score(probs[k * n // splits : (k + 1) * n // splits]) for k in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


def as_float_images(images: ImageArray) -> torch.Tensor:
    """Return images as a float32 B x C x H x W tensor in [0, 1].

    Parameters
    ----------
    images
        B x H x W or B x C x H x W; uint8 (divided by 255) or float in [0, 1] (kept).

    Returns
    -------
    torch.Tensor
        float32 tensor on CPU.
    """
    tensor = torch.as_tensor(images).detach().cpu()
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4:
        raise ValueError(f"images must be B x H x W or B x C x H x W; got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32) / 255.0
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or float in [0, 1]; got dtype {tensor.dtype}")
    return tensor.to(torch.float32)


def classifier_logits(model: nn.Module, images: ImageArray, batch_size: int = 512) -> np.ndarray:
    """Run a classifier over images in batches and return its logits.

    Parameters
    ----------
    model
        Module mapping float B x C x H x W images in [0, 1] to B x K logits; it is put in
        eval mode.
    images
        Images as accepted by :func:`as_float_images`.
    batch_size
        Images per forward pass.

    Returns
    -------
    numpy.ndarray
        float64 N x K logits.
    """
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = as_float_images(images[start : start + batch_size]).to(device)
            chunks.append(model(batch).double().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.empty((0, 0))
