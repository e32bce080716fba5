"""Fréchet Inception Distance: preprocessing, feature extraction, statistics and their cache.

Preprocessing (identical for real and generated images, versioned as :data:`PREPROCESS_VERSION`):

1. float images in [0, 1] are quantised to uint8 by rounding half up, ``floor(255 x + 0.5)``
   after clipping to [0, 1], exactly as saving them to PNG would; uint8 images pass unchanged;
2. grey images are repeated to 3 channels;
3. each image is resized to 299 x 299 with **TF1-style bilinear** interpolation
   (``tf.compat.v1.image.resize_bilinear`` with ``align_corners=False`` and no half-pixel
   centres, the resize inside the TensorFlow FID reference graph): output pixel ``i`` samples
   input coordinate ``i * in / out``.  This is *not* ``torch.nn.functional.interpolate``'s
   bilinear, which uses half-pixel centres; on 1,000 MNIST images the two differ by FID 3.4;
4. values are scaled as ``(x - 128) / 128``.

FID numbers are biased upwards roughly as c / N: compare only numbers computed with the same
number of images and the same extractor configuration.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from fissionvae.evaluation.inception import (
    FIDInceptionV3,
    default_cache_dir,
    load_inception,
)
from fissionvae.io import atomic_write

PREPROCESS_VERSION = "fid-pre-v1:round-uint8,grey-to-rgb,tf1-bilinear-299,(x-128)/128"
INCEPTION_SIZE = 299
ImageArray = np.ndarray | torch.Tensor


def _as_tensor(images: ImageArray) -> torch.Tensor:
    """Return ``images`` as a CPU tensor shaped B x C x H x W (C = 1 or 3)."""
    tensor = torch.as_tensor(images).detach().cpu()
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be B x H x W or B x C x H x W with C = 1 or 3; got shape "
            f"{tuple(tensor.shape)} (channels-last arrays need a transpose to B x C x H x W)"
        )
    return tensor


def quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise images to uint8 values the way saving a PNG would.

    Parameters
    ----------
    images
        uint8 tensor (returned as is) or float tensor with values in [0, 1].

    Returns
    -------
    torch.Tensor
        uint8 tensor; floats become ``floor(255 * clip(x, 0, 1) + 0.5)`` (round half up).

    Raises
    ------
    TypeError
        For dtypes other than uint8 and floating point.
    """
    if images.dtype == torch.uint8:
        return images
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be uint8 or float in [0, 1]; got dtype {images.dtype}")
    scaled = images.to(torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5
    return scaled.floor().to(torch.uint8)


def tf1_bilinear_matrix(size_in: int, size_out: int = INCEPTION_SIZE) -> torch.Tensor:
    """Interpolation matrix of TF1's legacy bilinear resize along one axis.

    Parameters
    ----------
    size_in, size_out
        Input and output lengths.

    Returns
    -------
    torch.Tensor
        float32 ``size_out x size_in`` matrix ``W`` such that ``W @ column`` resizes a column.
        Output index ``i`` reads input coordinate ``i * size_in / size_out`` (float32, as TF).
    """
    scale = torch.tensor(size_in / size_out, dtype=torch.float32)
    source = torch.arange(size_out, dtype=torch.float32) * scale
    lower = source.floor().to(torch.int64).clamp(max=size_in - 1)
    upper = (lower + 1).clamp(max=size_in - 1)
    frac = (source - lower.to(torch.float32)).to(torch.float64)
    rows = torch.arange(size_out)
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    weights.index_put_((rows, lower), 1.0 - frac, accumulate=True)
    weights.index_put_((rows, upper), frac, accumulate=True)
    return weights.to(torch.float32)


def resize_tf1_bilinear(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Resize a float B x C x H x W batch to ``size x size`` with TF1-style bilinear."""
    rows = tf1_bilinear_matrix(images.shape[-2], size)
    cols = tf1_bilinear_matrix(images.shape[-1], size)
    return rows @ images @ cols.T


def preprocess(images: ImageArray) -> torch.Tensor:
    """Turn a batch of images into the FID Inception-v3's input.

    Parameters
    ----------
    images
        numpy array or tensor, B x H x W or B x C x H x W with C = 1 or 3; uint8 (0..255) or
        float in [0, 1] (clipped, then rounded to uint8 as when saving a PNG).

    Returns
    -------
    torch.Tensor
        float32, B x 3 x 299 x 299, scaled as ``(x - 128) / 128``; see the module docstring
        for the exact steps (TF1-style bilinear resize).

    Raises
    ------
    ValueError
        For other shapes.
    TypeError
        For dtypes other than uint8 and floating point.
    """
    pixels = quantize_uint8(_as_tensor(images)).to(torch.float32)
    resized = resize_tf1_bilinear(pixels)
    if resized.shape[1] == 1:
        resized = resized.expand(-1, 3, -1, -1)
    return ((resized - 128.0) / 128.0).contiguous()


def extractor_identity(network_sha256: str, numerics: str) -> str:
    """The cache identity of FID features: network file, preprocessing and numeric mode.

    ``numerics`` is ``"fp32"`` for every runtime whose features agree with torch's float32 ones
    to 1e-4 relative (torch, OpenVINO f32, ONNX Runtime: they share cached statistics), and
    names the mode otherwise (``"bf16"`` for torch's autocast, ``"openvino-bf16"``).
    """
    return f"{network_sha256}|{PREPROCESS_VERSION}|{numerics}"


class FeatureExtractor(Protocol):
    """Anything that maps images to an (N, D) float64 array and names itself for caches.

    ``runtime`` and ``precision`` (e.g. ``"openvino"``, ``"fp32"``) are recorded in eval.json.
    """

    identity: str
    runtime: str
    precision: str

    def __call__(self, images: ImageArray) -> np.ndarray:
        """Return the features of ``images``."""
        ...


class InceptionFeatures:
    """Batched 2048-d FID Inception-v3 pool features of raw images.

    Parameters
    ----------
    path
        The TorchScript file; resolved by
        :func:`fissionvae.evaluation.inception.resolve_inception_path` when None.
    model
        An already-loaded network (used instead of ``path``; converted in place when
        ``channels_last`` is set).
    batch_size
        Images per forward pass (default: 16 on the CPU, the fastest measured; 200 on a GPU).
    channels_last
        Run the network in channels-last memory format (same features to ~1e-5).
    bf16
        Run under CPU bfloat16 autocast: about 1.8x the float32 throughput, but it moves FID by
        about +1.0 to +1.1 (100, 250 and 500 images a side), so it is off by default.
    progress
        Show a tqdm bar while extracting.

    Notes
    -----
    The defaults (channels-last float32, batch 16) are the fastest configuration measured on a
    2-core AMD EPYC that moves FID by less than 0.5 against plain float32 on the same images
    (by less than 1e-4; about 10% faster than float32 at batch 32); docs/benchmarks.md has the
    measurements.  ``identity`` names network file, preprocessing and numeric mode, so cached
    statistics are never mixed across them; the batch size and memory format do not enter it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: FIDInceptionV3 | None = None,
        batch_size: int | None = None,
        channels_last: bool = True,
        bf16: bool = False,
        progress: bool = True,
        device: str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        if batch_size is None:
            batch_size = 200 if self.device.type == "cuda" else 16
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive; got {batch_size}")
        if self.device.type == "cuda":
            # full float32 convolutions and matmuls: TF32 would move the features (and FID)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.model = model if model is not None else load_inception(path)
        self.model = self.model.to(self.device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.batch_size, self.channels_last, self.bf16 = batch_size, channels_last, bf16
        self.progress = progress
        self.runtime, self.precision = "torch", "bf16" if bf16 else "fp32"
        self.identity = extractor_identity(self.model.sha256, self.precision)

    def features_of_batch(self, images: ImageArray) -> torch.Tensor:
        """Return float32 B x 2048 features of one batch of raw images."""
        inputs = preprocess(images).to(self.device)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            return self.model(inputs).float().cpu()

    def __call__(self, images: ImageArray) -> np.ndarray:
        """Return the (N, 2048) float64 features of N raw images (see :func:`preprocess`)."""
        return extract_in_batches(
            self.features_of_batch, images, self.batch_size, self.model.num_features, self.progress
        )


def extract_in_batches(
    features_of_batch: Callable[[ImageArray], torch.Tensor],
    images: ImageArray,
    batch_size: int,
    num_features: int,
    progress: bool,
) -> np.ndarray:
    """Run ``features_of_batch`` over ``images`` in batches; returns (N, num_features) float64."""
    total = len(images)
    out = np.empty((total, num_features), dtype=np.float64)
    with tqdm(total=total, unit="img", desc="FID features", disable=not progress) as bar:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            out[start:stop] = features_of_batch(images[start:stop]).numpy()
            bar.update(stop - start)
    return out


@dataclass(frozen=True)
class FeatureStats:
    """Mean, covariance (ddof = 1) and count of a set of features."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Return the mean and unbiased covariance of (N, D) features, in float64.

    Parameters
    ----------
    features
        Array of shape (N, D) with N >= 2.

    Returns
    -------
    FeatureStats
        ``mu`` (D,), ``sigma`` (D, D) with denominator N - 1, ``n = N``.
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2; got shape {feats.shape}")
    return FeatureStats(feats.mean(axis=0), np.cov(feats, rowvar=False), feats.shape[0])


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS/LAPACK to one thread inside the block (if threadpoolctl is installed).

    On the 2-core test machine a 2048 x 2048 ``eigh`` took 2.6 s with one OpenBLAS thread and
    17-21 s with two whenever other processes competed for the cores.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` for symmetric positive semi-definite matrices.

    With ``sigma1 = V diag(l) V^T`` and ``W = V diag(sqrt(l))`` restricted to the eigenvalues
    above the numerical rank tolerance, ``W^T sigma2 W`` is symmetric PSD and has the nonzero
    spectrum of ``sigma1 sigma2``; its square-rooted eigenvalues sum to the trace.  A rank-r
    ``sigma1`` (fewer samples than features) thus costs one eigh of ``sigma1`` and one of an
    r x r matrix.
    """
    with _single_threaded_blas():
        values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2.0)
    tolerance = max(values.max(), 0.0) * len(values) * np.finfo(np.float64).eps
    keep = values > tolerance
    weights = vectors[:, keep] * np.sqrt(values[keep])
    with _single_threaded_blas():
        middle = np.linalg.eigvalsh(weights.T @ sigma2 @ weights)
    return float(np.sqrt(np.clip(middle, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, the last trace
    computed from symmetric eigendecompositions (see :func:`_trace_sqrt_product`); it agrees
    with the ``scipy.linalg.sqrtm`` formula of the reference implementations and with
    torchmetrics to ~1e-9 relative on well-conditioned inputs.

    Parameters
    ----------
    mu1, mu2
        Means, shape (D,).
    sigma1, sigma2
        Covariances, shape (D, D), symmetric positive semi-definite (rank-deficient is fine).

    Returns
    -------
    float
        The distance (>= 0 up to rounding).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: {mu1.shape} {sigma1.shape} {mu2.shape} {sigma2.shape}")
    diff = mu1 - mu2
    trace_sqrt = _trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two :class:`FeatureStats`."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def array_sha256(images: ImageArray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    array = np.ascontiguousarray(torch.as_tensor(images).detach().cpu().numpy())
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _save_npz_atomic(target: Path, **arrays: np.ndarray) -> None:
    """Write arrays to ``target`` (.npz) atomically."""
    atomic_write(target, lambda handle: np.savez(handle, **arrays))


class StatsCache:
    """On-disk cache of feature statistics, one .npz per (images, extractor) pair.

    The key is the sha256 of the images' content, the extractor's ``identity`` (for
    :class:`InceptionFeatures`: network file sha256, :data:`PREPROCESS_VERSION` and numeric
    mode) and the statistics format; changing any of them misses the cache.

    Parameters
    ----------
    cache_dir
        Folder of the .npz files; ``<default cache>/fid-stats`` when None.
    """

    FORMAT = "fid-stats-v1"

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        root = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.cache_dir = root if root is not None else default_cache_dir() / "fid-stats"

    def key(self, images: ImageArray, extractor_identity: str) -> str:
        """Return the cache key of ``images`` under an extractor identity."""
        parts = f"{self.FORMAT}|{extractor_identity}|{array_sha256(images)}"
        return hashlib.sha256(parts.encode()).hexdigest()

    def path(self, name: str, key: str) -> Path:
        """Return the file of an entry; ``name`` is only for humans reading the folder."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "stats"
        return self.cache_dir / f"{safe}-{key[:20]}.npz"

    def load(self, name: str, key: str) -> FeatureStats | None:
        """Return the cached statistics, or None when absent or written under another key."""
        target = self.path(name, key)
        if not target.is_file():
            return None
        with np.load(target) as data:
            if str(data["key"]) != key:
                return None
            return FeatureStats(data["mu"], data["sigma"], int(data["n"]))

    def save(self, name: str, key: str, stats: FeatureStats) -> Path:
        """Write statistics atomically and return the file."""
        target = self.path(name, key)
        _save_npz_atomic(target, mu=stats.mu, sigma=stats.sigma, n=np.int64(stats.n), key=np.str_(key))
        return target

    def get_or_compute(self, images: ImageArray, extractor: FeatureExtractor, name: str) -> FeatureStats:
        """Return cached statistics of ``images`` or compute, store and return them."""
        key = self.key(images, extractor.identity)
        cached = self.load(name, key)
        if cached is not None:
            return cached
        stats = feature_stats(extractor(images))
        self.save(name, key, stats)
        return stats


def real_stats(
    images: ImageArray, extractor: FeatureExtractor, cache_dir: str | os.PathLike[str] | None = None, name: str = "real"
) -> FeatureStats:
    """Feature statistics of a reference image set, cached on disk.

    Parameters
    ----------
    images
        The reference images (any layout :func:`preprocess` accepts).
    extractor
        E.g. :class:`InceptionFeatures`; its ``identity`` is part of the cache key.
    cache_dir
        Cache folder; see :class:`StatsCache`.
    name
        Human-readable prefix of the cache file, e.g. ``"mnist-test"``.

    Returns
    -------
    FeatureStats
        Mean, covariance and count of the images' features.
    """
    return StatsCache(cache_dir).get_or_compute(images, extractor, name)


def fid(real: FeatureStats, generated: ImageArray, extractor: FeatureExtractor) -> float:
    """FID of generated images against reference statistics (compare only equal counts)."""
    return fid_from_stats(real, feature_stats(extractor(generated)))
