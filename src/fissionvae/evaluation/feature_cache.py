"""Inception features and reference statistics for an evaluation, cached so that it resumes.

Generated images' features live in ``<run>/eval/cache``, real ones in the user cache, and the
real data's statistics are keyed by dataset content and extractor identity.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
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

try:
    import fcntl
except ImportError:  # Windows: no cross-process claims (see chunk_claim)
    fcntl = None  # type: ignore[assignment]


def extractor_for(opts: EvalOptions) -> FeatureExtractor:
    """The FID feature extractor that ``opts`` asks for (a missing Inception file fails here)."""
    return feature_extractor(
        opts.fid_runtime, opts.inception, device=opts.device, bf16=opts.fid_bf16, progress=opts.progress
    )


def cached_features(
    images: Tensor, extractor: FeatureExtractor, folder: Path, key: str, chunk: int = 1000, desc: str = ""
) -> np.ndarray:
    """Inception features of ``images``, computed and saved chunk by chunk (resumable).

    Processes that need the same features at once (the study's two evaluations side by side both
    start on the test images' statistics) share the work: a chunk another process is computing
    (its lock held) is skipped and read once that process releases it, so each chunk goes through
    the network once.  A lock dies with its process; a chunk left unwritten is computed here.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{key[:24]}-{i // chunk:05d}.npy" for i in range(0, len(images), chunk)]
    parts: dict[int, np.ndarray] = {}

    def compute(index: int) -> np.ndarray:
        feats = extractor(images[index * chunk : (index + 1) * chunk]).astype(np.float32)
        atomic_write_bytes(paths[index], _npy_bytes(feats))
        return feats

    with tqdm(
        total=len(paths),
        desc=f"FID features {desc}".strip(),
        unit="chunk",
        disable=not getattr(extractor, "progress", False),
    ) as bar:
        busy = []
        for index, path in enumerate(paths):
            if path.is_file():  # cached: read without a lock (a read-only cache stays readable)
                parts[index] = np.load(path)
                bar.update()
                continue
            with chunk_claim(path, wait=False) as claimed:
                if path.is_file():  # written by another process since the check above
                    parts[index] = np.load(path)
                elif claimed:
                    parts[index] = compute(index)
                else:
                    busy.append(index)
                    continue
            bar.update()
        for index in busy:  # computed by another process meanwhile: wait for its lock, then read
            with chunk_claim(paths[index], wait=True):
                parts[index] = np.load(paths[index]) if paths[index].is_file() else compute(index)
            bar.update()
    return np.concatenate([parts[i] for i in range(len(paths))]).astype(np.float64)


@contextmanager
def chunk_claim(path: Path, wait: bool) -> Iterator[bool]:
    """Hold the lock of the chunk file ``path`` (``<name>.lock`` beside it); yields whether it is held.

    ``wait=False`` does not block: it yields False while another process holds the lock.  Where
    ``fcntl`` is missing (Windows) every claim succeeds: processes then may compute a chunk twice,
    with the same result.
    """
    if fcntl is None:
        yield True
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
