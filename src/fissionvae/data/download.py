"""Downloading dataset files from mirrors, with progress and verification.

Each file is streamed into a temporary file next to its destination, verified
(SHA-256 of the decompressed content, or a published gzip MD5, plus a full
IDX parse), and only then atomically renamed into place, so a destination
file is either absent or valid.  Mirrors are tried in order.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from fissionvae.data.idx import DataFileError, read_idx
from fissionvae.data.locations import resolve_data_dir
from fissionvae.data.mirrors import file_urls
from fissionvae.data.registry import get_spec

__all__ = ["DownloadError", "download_dataset", "download_file"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "fissionvae-data-downloader (python-urllib)"


class DownloadError(RuntimeError):
    """A file could not be downloaded from any mirror; the message names the file and every failure."""


class _IncompleteDownload(OSError):
    """The server closed the connection before sending Content-Length bytes."""


def _temp_path(dest: Path) -> Path:
    # Same directory (atomic rename) and same suffix (same checks in read_idx).
    return dest.with_name(f".part-{os.getpid()}-{secrets.token_hex(4)}-{dest.name}")


def _stream(url: str, out: BinaryIO, *, timeout: float, progress: bool, desc: str) -> int:
    """Copy the body at ``url`` into ``out``; return the number of bytes."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress)
        with bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _IncompleteDownload(f"incomplete download: received {received} of {total} bytes")
    return received


def _fetch_verified(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None,
    accepted_gz_md5: Sequence[str],
    progress: bool,
    timeout: float,
) -> None:
    """Download ``url`` to a temporary file, verify it, rename it to ``dest``."""
    tmp = _temp_path(dest)
    try:
        with open(tmp, "xb") as out:
            _stream(url, out, timeout=timeout, progress=progress, desc=f"{dest.parent.name}/{dest.name}")
        read_idx(tmp, expected_sha256=expected_sha256, accepted_gz_md5=tuple(accepted_gz_md5))
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _reason(exc: BaseException) -> str:
    """One-line description of why a mirror failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect: {exc.reason}"
    if isinstance(exc, DataFileError):
        return f"verification failed: {exc.problem}"
    if isinstance(exc, _IncompleteDownload):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None,
    accepted_gz_md5: Sequence[str] = (),
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Download one IDX file from the first mirror that serves a valid copy.

    Parameters
    ----------
    urls : sequence of str
        Candidate URLs, tried in order (``http``, ``https`` or ``file``).
    dest : str or os.PathLike
        Destination file; its directory is created if needed.
    expected_sha256 : str or None
        SHA-256 (hex) of the decompressed content.
    accepted_gz_md5 : sequence of str, optional
        Published gzip MD5s that are accepted as well.
    progress : bool, default True
        Show a tqdm progress bar on stderr.
    timeout : float, default 60
        Socket timeout in seconds, per connection attempt and read.

    Returns
    -------
    pathlib.Path
        ``dest``, now holding a verified file.

    Raises
    ------
    ValueError
        If ``urls`` is empty.
    DownloadError
        If every URL failed; the one-line message lists each URL and why. Folders created for
        ``dest`` are removed again, so a failed download leaves nothing behind.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    if not urls:
        raise ValueError(f"no URLs given to download {dest}")
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            _fetch_verified(
                url,
                dest,
                expected_sha256=expected_sha256,
                accepted_gz_md5=accepted_gz_md5,
                progress=progress,
                timeout=timeout,
            )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            logger.info("download of %s failed: %s", url, _reason(exc))  # the final error lists them all
            continue
        return dest
    for folder in created:  # innermost first; only folders this call made, and only while empty
        with contextlib.suppress(OSError):
            folder.rmdir()
    raise DownloadError(f"could not download {dest} (every mirror failed: {'; '.join(failures)})")


def _is_valid(path: Path, expected_sha256: str | None, accepted_gz_md5: Sequence[str]) -> bool:
    if not path.is_file():
        return False
    try:
        read_idx(path, expected_sha256=expected_sha256, accepted_gz_md5=tuple(accepted_gz_md5))
    except DataFileError as exc:
        logger.warning("replacing invalid file: %s", exc)
        return False
    return True


def download_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: str | Sequence[str] | None = None,
    progress: bool = True,
    timeout: float = 60,
) -> list[Path]:
    """Make sure all files of a dataset are present and valid in ``data_dir``.

    Parameters
    ----------
    name : str
        A key of :data:`fissionvae.data.sources.DATASETS`.
    data_dir : str or os.PathLike, optional
        See :func:`fissionvae.data.sources.resolve_data_dir`.
    mirrors : str or sequence of str, optional
        Override mirror roots holding ``<dataset>/<file>``; default
        ``$FISSIONVAE_MIRROR``, else the dataset's own mirrors.
    progress : bool, default True
        Show progress bars.
    timeout : float, default 60
        Socket timeout in seconds.

    Returns
    -------
    list of pathlib.Path
        ``<data_dir>/<name>/<file>`` for every file, train before test,
        images before labels.  Files that already verify are not downloaded.

    Raises
    ------
    ValueError
        Unknown dataset.
    DownloadError
        A file could not be downloaded from any mirror.
    """
    spec = get_spec(name)
    root = resolve_data_dir(data_dir)
    paths = []
    for filename in spec.filenames:
        dest = root / spec.name / filename
        sha256, md5s = spec.sha256.get(filename), spec.accepted_gz_md5(filename)
        if not _is_valid(dest, sha256, md5s):
            download_file(
                file_urls(spec, filename, mirrors),
                dest,
                expected_sha256=sha256,
                accepted_gz_md5=md5s,
                progress=progress,
                timeout=timeout,
            )
        paths.append(dest)
    return paths
