"""Where dataset files are looked for: the data folder and read-only system folders.

Files live at ``<data_dir>/<dataset>/<file>``. The data folder is, in order of precedence, an
explicit argument, ``$FISSIONVAE_DATA_DIR``, or ``$XDG_CACHE_HOME/fissionvae/data``
(``~/.cache/fissionvae/data``). Read-only system locations (:data:`DEFAULT_SEARCH_DIRS`, e.g.
where Debian's ``dataset-fashion-mnist`` package installs) are searched as a fallback, for both
the ``.gz`` and the uncompressed file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fissionvae.data.idx import DataFileError

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_SEARCH_DIRS",
    "candidate_paths",
    "default_cache_dir",
    "find_file",
    "resolve_data_dir",
]

#: Environment variable naming the data directory.
DATA_DIR_ENV = "FISSIONVAE_DATA_DIR"
#: Read-only locations searched after the data directory.
DEFAULT_SEARCH_DIRS = (Path("/usr/share/datasets"),)


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

    Raises
    ------
    DataFileError
        A candidate path exists but is not a regular file (e.g. a folder).
    """
    for path in candidate_paths(name, filename, data_dir, search_dirs=search_dirs):
        if path.is_file():
            return path
        if path.exists() or path.is_symlink():
            what = "a folder" if path.is_dir() else "a broken link" if not path.exists() else "not a regular file"
            raise DataFileError(path, f"is {what} where the data file should be")
    return None
