"""On-disk cache of feature statistics, keyed by image content and extractor identity."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from fissionvae.evaluation.fid_extractor import FeatureExtractor
from fissionvae.evaluation.fid_preprocess import ImageArray
from fissionvae.evaluation.frechet import FeatureStats, feature_stats
from fissionvae.evaluation.inception import default_cache_dir
from fissionvae.io import atomic_write


def array_sha256(images: ImageArray) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    array = np.ascontiguousarray(torch.as_tensor(images).detach().cpu().numpy())
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.data.cast("B"))
    return digest.hexdigest()


def _save_npz_atomic(target: Path, **arrays: np.ndarray | np.generic) -> None:
    """Write arrays to ``target`` (.npz) atomically."""
    atomic_write(target, lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]


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
