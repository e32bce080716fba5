"""Inception features and reference statistics for an evaluation, cached so that it resumes.

Generated images' features live in ``<run>/eval/cache``, real ones in the user cache, and the
real data's statistics are keyed by dataset content and extractor identity.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.data.federated import GroupData
from fissionvae.evaluation.fid import FeatureExtractor, FeatureStats, StatsCache, feature_stats
from fissionvae.evaluation.generation import to_uint8
from fissionvae.evaluation.options import EvalOptions
from fissionvae.evaluation.runtimes import feature_extractor
from fissionvae.io import atomic_write_bytes


def extractor_for(opts: EvalOptions) -> FeatureExtractor:
    """The FID feature extractor that ``opts`` asks for (a missing Inception file fails here)."""
    return feature_extractor(
        opts.fid_runtime, opts.inception, device=opts.device, bf16=opts.fid_bf16, progress=opts.progress
    )


def cached_features(
    images: Tensor, extractor: FeatureExtractor, folder: Path, key: str, chunk: int = 1000, desc: str = ""
) -> np.ndarray:
    """Inception features of ``images``, computed and saved chunk by chunk (resumable)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in tqdm(
        range(0, len(images), chunk),
        desc=f"FID features {desc}".strip(),
        unit="chunk",
        disable=not getattr(extractor, "progress", False),
    ):
        path = folder / f"{key[:24]}-{i // chunk:05d}.npy"
        if path.is_file():
            parts.append(np.load(path))
            continue
        feats = extractor(images[i : i + chunk]).astype(np.float32)
        atomic_write_bytes(path, _npy_bytes(feats))
        parts.append(feats)
    return np.concatenate(parts).astype(np.float64)


def reference_stats(group: GroupData, extractor: FeatureExtractor, cached_only: bool = False) -> FeatureStats | None:
    """Inception statistics of a group's test images, cached by content + extractor identity.

    ``cached_only``: None when they are not cached yet, instead of computing them.
    """
    stats_cache = StatsCache()
    real_images = to_uint8(group.test_images)
    key = stats_cache.key(real_images, extractor.identity)
    r = stats_cache.load(f"{group.dataset}-test", key)
    if r is None and cached_only:
        return None
    if r is None:
        feats = cached_features(
            real_images, extractor, stats_cache.cache_dir / "features", key, desc=f"{group.name} test"
        )
        r = feature_stats(feats)
        stats_cache.save(f"{group.dataset}-test", key, r)
    return r


def _npy_bytes(array: np.ndarray) -> bytes:

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()
