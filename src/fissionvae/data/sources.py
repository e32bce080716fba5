"""Loading one split of a registered dataset as verified arrays (downloading missing files).

The registry is :mod:`fissionvae.data.registry`, where files are looked for is
:mod:`fissionvae.data.locations`, download mirrors are :mod:`fissionvae.data.mirrors`. Every
file is verified against the SHA-256 of its decompressed content (or a published gzip MD5)
before it is used. The names of those modules stay importable from here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fissionvae.data.download import download_file
from fissionvae.data.idx import DataFileError, read_idx
from fissionvae.data.locations import (
    DATA_DIR_ENV,
    DEFAULT_SEARCH_DIRS,
    candidate_paths,
    default_cache_dir,
    find_file,
    resolve_data_dir,
)
from fissionvae.data.mirrors import MIRROR_ENV, file_urls, resolve_mirrors
from fissionvae.data.registry import DATASETS, SPLITS, DatasetSpec, check_split, get_spec

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "DEFAULT_SEARCH_DIRS",
    "DatasetSpec",
    "MIRROR_ENV",
    "SPLITS",
    "candidate_paths",
    "clear_cache",
    "default_cache_dir",
    "file_urls",
    "find_file",
    "get_spec",
    "load_split",
    "resolve_data_dir",
    "resolve_mirrors",
]

#: the IDX element type of every registered dataset's images and labels
_IDX_DTYPE = np.dtype(np.uint8)


@dataclass(frozen=True)
class _FileCheck:
    """Hashable identity of a file to load, including what to verify it against."""

    path: str
    mtime_ns: int
    size: int
    sha256: str | None
    gz_md5: tuple[str, ...]

    @classmethod
    def of(cls, path: Path, spec: DatasetSpec, filename: str) -> _FileCheck:
        resolved = path.resolve()
        stat = resolved.stat()
        return cls(
            str(resolved), stat.st_mtime_ns, stat.st_size, spec.sha256.get(filename), spec.accepted_gz_md5(filename)
        )

    def read(self) -> np.ndarray:
        return read_idx(self.path, expected_sha256=self.sha256, accepted_gz_md5=self.gz_md5, expected_dtype=_IDX_DTYPE)


@functools.lru_cache(maxsize=8)
def _load_pair(
    images: _FileCheck, labels: _FileCheck, image_shape: tuple[int, ...], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read, verify and validate an images/labels pair; cached, read-only result."""
    x = images.read()
    y = labels.read()
    if x.dtype != np.uint8 or x.shape[1:] != tuple(image_shape):
        raise DataFileError(
            images.path,
            f"expected uint8 images of shape (N, {', '.join(map(str, image_shape))}), found {x.dtype} {x.shape}",
        )
    if y.ndim != 1:
        raise DataFileError(labels.path, f"expected a 1-D label vector, found shape {y.shape}")
    if len(x) != len(y):
        raise DataFileError(images.path, f"count mismatch: {len(x)} images but {len(y)} labels in {labels.path}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataFileError(labels.path, f"labels out of range [0, {num_classes}): min {y.min()}, max {y.max()}")
    y = y.astype(np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def clear_cache() -> None:
    """Forget all arrays decoded by :func:`load_split` in this process."""
    _load_pair.cache_clear()


def _missing_message(spec: DatasetSpec, split: str, filename: str, looked: list[Path], data_dir: Path) -> str:
    folders = ", ".join(dict.fromkeys(str(p.parent) for p in looked[1:]))
    return (
        f"{spec.name} {split} file not found: {looked[0]} (also looked in {folders}); download it with "
        f"`fissionvae data download --data-dir {data_dir}` (or set data.download: true or ${DATA_DIR_ENV})"
    )


def _locate(
    spec: DatasetSpec,
    split: str,
    filename: str,
    data_dir: Path,
    *,
    download: bool,
    mirrors: str | Sequence[str] | None,
    progress: bool,
    search_dirs: Sequence[str | os.PathLike],
) -> Path:
    path = find_file(spec.name, filename, data_dir, search_dirs=search_dirs)
    if path is not None:
        return path
    if not download:
        looked = candidate_paths(spec.name, filename, data_dir, search_dirs=search_dirs)
        raise FileNotFoundError(_missing_message(spec, split, filename, looked, data_dir))
    return download_file(
        file_urls(spec, filename, mirrors),
        data_dir / spec.name / filename,
        expected_sha256=spec.sha256.get(filename),
        accepted_gz_md5=spec.accepted_gz_md5(filename),
        progress=progress,
    )


def load_split(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    mirrors: str | Sequence[str] | None = None,
    progress: bool = True,
    search_dirs: Sequence[str | os.PathLike] = DEFAULT_SEARCH_DIRS,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a dataset as verified numpy arrays.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    split : {"train", "test"}
        Which split.
    data_dir : str or os.PathLike, optional
        See :func:`resolve_data_dir`.
    download : bool, default True
        Download missing files into ``<data_dir>/<name>/``.
    mirrors : str or sequence of str, optional
        Override mirror roots (see :func:`file_urls`).
    progress : bool, default True
        Show a progress bar while downloading.
    search_dirs : sequence of path, optional
        Read-only fallback roots, default :data:`DEFAULT_SEARCH_DIRS`.

    Returns
    -------
    images : numpy.ndarray
        ``uint8``, shape ``(N, 28, 28)``.
    labels : numpy.ndarray
        ``int64``, shape ``(N,)``.

    Both are fresh writable copies of arrays cached in-process (keyed by
    dataset, split and the resolved file paths with their mtime and size).

    Raises
    ------
    ValueError
        Unknown dataset or split.
    FileNotFoundError
        A file is missing and ``download`` is false.
    DataFileError
        A file is corrupt, fails verification, or images and labels disagree.
    DownloadError
        Downloading failed from every mirror (nothing is left behind).
    """
    spec = get_spec(name)
    check_split(split)
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataFileError(root, "the data folder is a file, not a folder")
    checks = [
        _FileCheck.of(
            _locate(
                spec,
                split,
                filename,
                root,
                download=download,
                mirrors=mirrors,
                progress=progress,
                search_dirs=search_dirs,
            ),
            spec,
            filename,
        )
        for filename in spec.files[split]
    ]
    images, labels = _load_pair(*checks, tuple(spec.image_shape), spec.num_classes)
    return images.copy(), labels.copy()
