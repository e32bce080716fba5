"""cached_features: chunk by chunk, resumable, and shared between processes that need the same features."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fissionvae.evaluation.feature_cache import _npy_bytes, cached_features

fcntl = pytest.importorskip("fcntl")  # the cross-process claims are Unix-only

CHUNK = 4
KEY = "k" * 40


class CountingExtractor:
    """Four features per image (its mean intensity, repeated); records the first image index of each call."""

    progress = False

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(int(images[0, 0, 0]))
        return np.repeat(images.reshape(len(images), -1).mean(axis=1, keepdims=True), 4, axis=1)


def _images() -> np.ndarray:
    """10 images whose first pixel is their index: 3 chunks of 4, 4 and 2."""
    images = np.zeros((10, 3, 3), dtype=np.float32)
    images[:, 0, 0] = np.arange(10)
    return images


def _chunk(folder: Path, index: int) -> Path:
    return folder / f"{KEY[:24]}-{index:05d}.npy"


def test_chunks_are_saved_and_reused(tmp_path: Path) -> None:
    first = CountingExtractor()
    feats = cached_features(_images(), first, tmp_path, KEY, chunk=CHUNK)
    assert feats.shape == (10, 4) and first.calls == [0, 4, 8]
    np.testing.assert_allclose(feats[:, 0], _images().reshape(10, -1).mean(axis=1), rtol=1e-6)
    again = CountingExtractor()
    for lock in tmp_path.glob("*.lock"):
        lock.unlink()
    tmp_path.chmod(0o555)  # a read-only cache (root ignores the mode: no new lock file is what shows no lock was taken)
    try:
        np.testing.assert_array_equal(cached_features(_images(), again, tmp_path, KEY, chunk=CHUNK), feats)
    finally:
        tmp_path.chmod(0o755)
    assert again.calls == [] and not list(tmp_path.glob("*.lock"))  # every chunk read back, none recomputed


def _hold(path: Path):
    """Take the chunk's lock as another process computing it would (a separate open file description)."""
    lock = open(path.with_name(path.name + ".lock"), "a+b")  # noqa: SIM115 (held across the test, closed there)
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _run_in_thread(folder: Path, extractor: CountingExtractor) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(
        target=lambda: out.setdefault("feats", cached_features(_images(), extractor, folder, KEY, chunk=CHUNK))
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not (_chunk(folder, 1).is_file() and _chunk(folder, 2).is_file()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return thread, out


def test_a_chunk_another_process_computes_is_read_not_recomputed(tmp_path: Path) -> None:
    lock = _hold(_chunk(tmp_path, 0))
    extractor = CountingExtractor()
    thread, out = _run_in_thread(tmp_path, extractor)
    assert extractor.calls == [4, 8] and not _chunk(tmp_path, 0).exists()  # went on past the busy chunk
    assert thread.is_alive()  # and now waits for it
    theirs = np.full((CHUNK, 4), 7.0, dtype=np.float32)  # what "the other process" computed
    _chunk(tmp_path, 0).write_bytes(_npy_bytes(theirs))
    lock.close()  # releases the lock
    thread.join(timeout=30)
    assert not thread.is_alive() and extractor.calls == [4, 8]
    np.testing.assert_array_equal(out["feats"][:CHUNK], theirs)
    assert out["feats"].shape == (10, 4)


def test_a_chunk_whose_holder_died_unwritten_is_computed_here(tmp_path: Path) -> None:
    lock = _hold(_chunk(tmp_path, 0))
    extractor = CountingExtractor()
    thread, out = _run_in_thread(tmp_path, extractor)
    lock.close()  # the holder is gone without writing its chunk
    thread.join(timeout=30)
    assert not thread.is_alive() and extractor.calls == [4, 8, 0]
    np.testing.assert_allclose(out["feats"][:, 0], _images().reshape(10, -1).mean(axis=1), rtol=1e-6)
    assert _chunk(tmp_path, 0).is_file()
