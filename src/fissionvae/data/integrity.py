"""Whether a data file holds the bytes it should: strict gzip decompression and checksum verification.

Verification is done on the *decompressed* content (SHA-256), because different mirrors gzip the
same content differently.  As a secondary route, a gzip file whose MD5 equals one of the published
MD5s of the original mirrors is accepted as well.  Nothing here knows a file format: the IDX format
is :mod:`fissionvae.data.idx`, which reads a file through these checks.

Every problem is reported as a :class:`DataFileError` whose message names the file and what is
wrong with it.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable

__all__ = ["GZIP_MAGIC", "DataFileError", "gunzip", "is_gzip", "verify_digests"]

GZIP_MAGIC = b"\x1f\x8b"


class DataFileError(ValueError):
    """A data file is malformed, truncated, corrupt or fails verification.

    Parameters
    ----------
    path : str or os.PathLike
        The offending file; always part of the message.
    problem : str
        What is wrong with it.

    Attributes
    ----------
    path : str
        The offending file.
    problem : str
        What is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Keep the exception picklable (e.g. across DataLoader worker processes).
        return (type(self), (self.path, self.problem))


def is_gzip(data: bytes | memoryview) -> bool:
    """Return whether ``data`` starts with the gzip magic bytes."""
    return bytes(data[:2]) == GZIP_MAGIC


def _describe_zlib_error(exc: zlib.error) -> str:
    text = str(exc)
    if "incorrect data check" in text:
        return f"corrupt gzip: CRC check failed ({text})"
    if "incorrect length check" in text:
        return f"corrupt gzip: length check failed ({text})"
    if "incorrect header check" in text or "unknown compression method" in text:
        return f"corrupt gzip: bad gzip header ({text})"
    return f"corrupt gzip: invalid compressed data ({text})"


def gunzip(raw: bytes, path: str | os.PathLike = "<bytes>") -> bytes:
    """Decompress gzip data strictly, including CRC and length checks.

    Multi-member files are supported; zero padding after the last member is
    ignored, any other trailing data is an error.

    Parameters
    ----------
    raw : bytes
        The complete gzip file content.
    path : str or os.PathLike, optional
        Used in error messages only.

    Returns
    -------
    bytes
        The decompressed content.

    Raises
    ------
    DataFileError
        If the data is not gzip, is corrupt, fails the CRC check, is
        truncated, or has trailing garbage.
    """
    if not is_gzip(raw):
        raise DataFileError(path, f"not a gzip file: starts with {bytes(raw[:2])!r}, expected {GZIP_MAGIC!r}")
    view = memoryview(raw)
    parts: list[bytes] = []
    pos = 0
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            parts.append(inflater.decompress(view[pos:]))
        except zlib.error as exc:
            raise DataFileError(path, _describe_zlib_error(exc)) from None
        if not inflater.eof:
            raise DataFileError(path, "truncated gzip: compressed data ended before the end-of-stream marker")
        rest = inflater.unused_data
        if not rest.strip(b"\0"):
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if not is_gzip(rest):
            raise DataFileError(path, f"trailing garbage: {len(rest)} bytes after the end of the gzip stream")
        pos = len(raw) - len(rest)


def verify_digests(
    content: bytes,
    raw: bytes,
    path: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    accepted_gz_md5: Iterable[str] = (),
) -> None:
    """Check the content SHA-256, falling back to published gzip MD5s.

    Parameters
    ----------
    content : bytes
        Decompressed content.
    raw : bytes
        The file as stored (gzip or not).
    path : str or os.PathLike
        Used in error messages only.
    expected_sha256 : str, optional
        SHA-256 (hex) of the decompressed content; the primary check.
    accepted_gz_md5 : iterable of str, optional
        MD5s (hex) of gzip files that are accepted as they are.

    Raises
    ------
    DataFileError
        If any checksum was given and none matches.
    """
    md5s = {m.lower() for m in accepted_gz_md5}
    if expected_sha256 is None and not md5s:
        return
    if expected_sha256 is not None:
        actual_sha = hashlib.sha256(content).hexdigest()
        if actual_sha == expected_sha256.lower():
            return
    if md5s and is_gzip(raw) and hashlib.md5(raw, usedforsecurity=False).hexdigest() in md5s:
        return
    details = []
    if expected_sha256 is not None:
        details.append(f"SHA-256 of the decompressed content is {actual_sha}, expected {expected_sha256.lower()}")
    if md5s:
        if is_gzip(raw):
            actual_md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
            details.append(f"gzip MD5 {actual_md5} is not one of the published {sorted(md5s)}")
        else:
            details.append("the file is not gzip-compressed, so no published gzip MD5 applies")
    raise DataFileError(path, "checksum mismatch: " + "; ".join(details))
