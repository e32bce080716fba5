"""Dataset registry (MNIST, FashionMNIST), file lookup and loading of splits.

Files live at ``<data_dir>/<dataset>/<file>``.  The data directory is, in
order of precedence, an explicit argument, ``$FISSIONVAE_DATA_DIR``, or
``$XDG_CACHE_HOME/fissionvae/data`` (``~/.cache/fissionvae/data``).  Read-only
system locations (:data:`DEFAULT_SEARCH_DIRS`, e.g. where Debian's
``dataset-fashion-mnist`` package installs) are searched as a fallback, for
both the ``.gz`` and the uncompressed file.

Every file is verified against the SHA-256 of its decompressed content (or a
published gzip MD5) before it is used.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fissionvae.data.idx import DataFileError, read_idx

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

#: Environment variable naming the data directory.
DATA_DIR_ENV = "FISSIONVAE_DATA_DIR"
#: Environment variable with mirror base URLs (whitespace-separated) under which
#: ``<dataset>/<file>`` lives; replaces the built-in mirrors.
MIRROR_ENV = "FISSIONVAE_MIRROR"
#: Read-only locations searched after the data directory.
DEFAULT_SEARCH_DIRS = (Path("/usr/share/datasets"),)
#: Valid split names.
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """Static description of a dataset distributed as four IDX files.

    Attributes
    ----------
    name : str
        Registry key, also the sub-directory name (``mnist``, ``fashion-mnist``).
    files : Mapping[str, tuple[str, str]]
        Split -> (images file, labels file).
    sha256 : Mapping[str, str]
        File -> SHA-256 (hex) of its decompressed content.
    gz_md5 : Mapping[str, str]
        File -> published MD5 (hex) of the gzip file of the original mirrors.
    mirrors : tuple of str
        Base URLs under which the files live directly.
    image_shape : tuple of int
        Shape of one image.
    num_classes : int
        Number of label classes.
    class_names : tuple of str
        Human-readable class names, indexed by label.
    """

    name: str
    files: Mapping[str, tuple[str, str]]
    sha256: Mapping[str, str]
    gz_md5: Mapping[str, str]
    mirrors: tuple[str, ...]
    image_shape: tuple[int, ...] = (28, 28)
    num_classes: int = 10
    class_names: tuple[str, ...] = field(default=tuple(str(i) for i in range(10)))

    def __post_init__(self) -> None:
        for attr in ("files", "sha256", "gz_md5"):
            object.__setattr__(self, attr, MappingProxyType(dict(getattr(self, attr))))

    def __hash__(self) -> int:  # the mappings are unhashable; the name identifies a spec
        return hash(self.name)

    @property
    def filenames(self) -> tuple[str, ...]:
        """All files of the dataset, split by split, images before labels."""
        return tuple(f for split in self.files for f in self.files[split])

    def accepted_gz_md5(self, filename: str) -> tuple[str, ...]:
        """Published gzip MD5s accepted for ``filename`` (empty if none)."""
        md5 = self.gz_md5.get(filename)
        return (md5,) if md5 else ()


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

#: Registered datasets by name (read-only mapping).
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        "mnist": DatasetSpec(
            name="mnist",
            files=_MNIST_FILES,
            sha256={
                "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
            gz_md5={
                "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
            },
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "http://yann.lecun.com/exdb/mnist/",
            ),
        ),
        "fashion-mnist": DatasetSpec(
            name="fashion-mnist",
            files=_MNIST_FILES,
            sha256={
                "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
            gz_md5={
                "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
            },
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            class_names=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
        ),
    }
)


def get_spec(name: str) -> DatasetSpec:
    """Return the registered :class:`DatasetSpec` called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is unknown; the message lists the valid names.
    """
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(repr(n) for n in DATASETS)
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {valid}") from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        valid = ", ".join(repr(s) for s in SPLITS)
        raise ValueError(f"unknown split {split!r}; valid splits: {valid}")


def default_cache_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/fissionvae/data`` (default ``~/.cache/...``).

    A relative or empty ``$XDG_CACHE_HOME`` is ignored, as the XDG spec asks.
    """
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "fissionvae" / "data"


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Pick the data directory.

    Parameters
    ----------
    explicit : str or os.PathLike, optional
        Takes precedence when given.

    Returns
    -------
    pathlib.Path
        ``explicit``, else ``$FISSIONVAE_DATA_DIR``, else
        :func:`default_cache_dir`; ``~`` is expanded.  Not created.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def _name_variants(filename: str) -> tuple[str, ...]:
    if filename.endswith(".gz"):
        return (filename, filename[: -len(".gz")])
    return (filename,)


def candidate_paths(
    name: str,
    filename: str,
    data_dir: str | os.PathLike | None,
    *,
    search_dirs: Sequence[str | os.PathLike] = DEFAULT_SEARCH_DIRS,
) -> list[Path]:
    """All locations :func:`find_file` checks, in order."""
    roots = [resolve_data_dir(data_dir), *(Path(d) for d in search_dirs)]
    return [root / name / variant for root in roots for variant in _name_variants(filename)]


def find_file(
    name: str,
    filename: str,
    data_dir: str | os.PathLike | None,
    *,
    search_dirs: Sequence[str | os.PathLike] = DEFAULT_SEARCH_DIRS,
) -> Path | None:
    """Locate a dataset file.

    Looks at ``<data_dir>/<name>/<filename>``, then the same under each of
    ``search_dirs``; in each place a ``.gz`` file is also accepted without
    the ``.gz`` suffix (uncompressed).

    Parameters
    ----------
    name : str
        Dataset name (sub-directory).
    filename : str
        File name as registered (usually ending in ``.gz``).
    data_dir : str or os.PathLike or None
        Data directory; ``None`` means :func:`resolve_data_dir`.
    search_dirs : sequence of path, optional
        Fallback roots, default :data:`DEFAULT_SEARCH_DIRS`.

    Returns
    -------
    pathlib.Path or None
        The first existing file, or ``None``.
    """
    for path in candidate_paths(name, filename, data_dir, search_dirs=search_dirs):
        if path.is_file():
            return path
    return None


def resolve_mirrors(mirrors: str | Sequence[str] | None = None) -> tuple[str, ...] | None:
    """Return override mirror base URLs, or ``None`` for the built-in ones.

    Parameters
    ----------
    mirrors : str or sequence of str, optional
        Base URLs under which ``<dataset>/<file>`` lives.  When ``None``,
        ``$FISSIONVAE_MIRROR`` (whitespace-separated URLs) is used if set.
    """
    if mirrors is None:
        env = os.environ.get(MIRROR_ENV, "").split()
        return tuple(env) or None
    if isinstance(mirrors, str):
        mirrors = (mirrors,)
    return tuple(mirrors)


def file_urls(spec: DatasetSpec, filename: str, mirrors: str | Sequence[str] | None = None) -> list[str]:
    """URLs to try, in order, for one file of ``spec``.

    Override mirrors (argument or ``$FISSIONVAE_MIRROR``) are roots holding
    ``<dataset>/<file>`` and replace the dataset's own mirrors, which hold
    ``<file>`` directly.
    """
    override = resolve_mirrors(mirrors)
    if override is None:
        return [_join_url(base, filename) for base in spec.mirrors]
    return [_join_url(base, f"{spec.name}/{filename}") for base in override]


def _join_url(base: str, relative: str) -> str:
    return base.rstrip("/") + "/" + relative


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
        return read_idx(self.path, expected_sha256=self.sha256, accepted_gz_md5=self.gz_md5)


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
    places = "\n  ".join(str(p) for p in looked)
    return (
        f"{spec.name} {split} file {filename!r} not found; looked in:\n  {places}\n"
        f"Download it with `fissionvae data download --data-dir {data_dir}` "
        f"(or pass download=True / set ${DATA_DIR_ENV})."
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
    from fissionvae.data.download import download_file  # download imports this module

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
    RuntimeError
        Downloading failed from every mirror.
    """
    spec = get_spec(name)
    _check_split(split)
    root = resolve_data_dir(data_dir)
    kwargs = dict(download=download, mirrors=mirrors, progress=progress, search_dirs=search_dirs)
    checks = [
        _FileCheck.of(_locate(spec, split, filename, root, **kwargs), spec, filename) for filename in spec.files[split]
    ]
    images, labels = _load_pair(*checks, tuple(spec.image_shape), spec.num_classes)
    return images.copy(), labels.copy()
