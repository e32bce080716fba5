"""Reading, writing and verifying IDX files (the MNIST / FashionMNIST format).

An IDX file starts with a 4-byte magic number ``0x00 0x00 <type> <ndim>``,
followed by ``ndim`` big-endian ``uint32`` dimension sizes and the payload in
C order, big-endian.  The files are usually distributed gzip-compressed.

Integrity (strict gzip decompression, checksums) is :mod:`fissionvae.data.integrity`; its
names are importable from here as well.  Every problem is reported as a :class:`DataFileError`
whose message names the file and what is wrong with it; :func:`read_idx` returns an array only
after all checks have passed.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fissionvae.data.integrity import GZIP_MAGIC, DataFileError, gunzip, is_gzip, verify_digests

__all__ = [
    "DataFileError",
    "IDX_DTYPES",
    "IdxHeader",
    "decode_idx",
    "encode_idx",
    "gunzip",
    "is_gzip",
    "parse_header",
    "read_idx",
    "verify_digests",
    "write_idx",
]

#: IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_CODE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}


@dataclass(frozen=True)
class IdxHeader:
    """Parsed IDX header.

    Attributes
    ----------
    dtype : numpy.dtype
        Big-endian element type of the payload.
    shape : tuple of int
        Dimension sizes.
    offset : int
        Byte offset of the payload.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def payload_nbytes(self) -> int:
        """Number of payload bytes that the header announces."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count * self.dtype.itemsize


def parse_header(data: bytes | memoryview, path: str | os.PathLike = "<bytes>") -> IdxHeader:
    """Parse and validate the IDX magic number and dimensions.

    Parameters
    ----------
    data : bytes or memoryview
        Decompressed IDX content (at least the header).
    path : str or os.PathLike, optional
        Used in error messages only.

    Returns
    -------
    IdxHeader

    Raises
    ------
    DataFileError
        On a wrong magic number or a header cut short.
    """
    if len(data) < 4:
        raise DataFileError(path, f"truncated: file has {len(data)} bytes, too short for the 4-byte IDX magic number")
    magic = bytes(data[:4])
    zero, type_code, ndim = magic[:2], magic[2], magic[3]
    if zero != b"\0\0" or type_code not in IDX_DTYPES or ndim == 0:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFileError(
            path,
            f"wrong magic number 0x{magic.hex().upper()}: expected 0x0000, a type code "
            f"({codes}) and a number of dimensions >= 1 - not an IDX file",
        )
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataFileError(
            path,
            f"truncated: header announces {ndim} dimensions ({offset} header bytes), file has {len(data)} bytes",
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return IdxHeader(dtype=IDX_DTYPES[type_code], shape=shape, offset=offset)


def decode_idx(data: bytes | memoryview, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX content into a native-endian array.

    Parameters
    ----------
    data : bytes or memoryview
        Decompressed IDX content.
    path : str or os.PathLike, optional
        Used in error messages only.

    Returns
    -------
    numpy.ndarray
        A new, writable, native-endian array that owns its memory.

    Raises
    ------
    DataFileError
        On a wrong magic number, a truncated payload or trailing bytes.
    """
    header = parse_header(data, path)
    expected = header.payload_nbytes
    found = len(data) - header.offset
    if found != expected:
        _check_type_code(header, found, path)
    if found < expected:
        raise DataFileError(path, f"truncated: expected {expected} bytes of data, found {found} (shape {header.shape})")
    if found > expected:
        raise DataFileError(
            path,
            f"trailing bytes: expected {expected} bytes of data, found {found} "
            f"({found - expected} extra bytes after the payload, shape {header.shape})",
        )
    native = header.dtype.newbyteorder("=")
    flat = np.frombuffer(data, dtype=header.dtype, offset=header.offset)
    if header.dtype.itemsize == 1:
        flat = flat.view(native)  # no byte order: a plain copy is much faster
    return flat.astype(native, copy=True).reshape(header.shape)


def _type_name(code: int) -> str:
    return f"0x{code:02X} ({IDX_DTYPES[code].name})"


def _check_type_code(header: IdxHeader, found: int, path: str | os.PathLike) -> None:
    """A payload whose size fits the shape exactly with another element type: the type byte is wrong."""
    count = header.payload_nbytes // header.dtype.itemsize
    fits = [code for code, dt in IDX_DTYPES.items() if count and count * dt.itemsize == found]
    if fits and header.dtype.itemsize != IDX_DTYPES[fits[0]].itemsize:
        code = _CODE_BY_KIND[(header.dtype.kind, header.dtype.itemsize)]
        raise DataFileError(
            path,
            f"wrong IDX type byte {_type_name(code)}: the {found}-byte payload holds {count} elements "
            f"of {IDX_DTYPES[fits[0]].itemsize} byte(s) (e.g. type {_type_name(fits[0])}), not of "
            f"{header.dtype.itemsize}; the type byte was changed or the file is corrupt",
        )


def read_idx(
    path: str | os.PathLike,
    *,
    expected_sha256: str | None = None,
    accepted_gz_md5: tuple[str, ...] = (),
    expected_dtype: np.dtype | None = None,
) -> np.ndarray:
    """Read a (possibly gzip-compressed) IDX file, with full verification.

    Compression is detected from the content; a file whose name ends in
    ``.gz`` must be gzip.  The array is returned only after every check
    (gzip integrity, magic number, exact payload length, checksums) passed.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file, raw or gzip.
    expected_sha256 : str, optional
        SHA-256 (hex) of the decompressed content.
    accepted_gz_md5 : tuple of str, optional
        Published MD5s (hex) of gzip files that are accepted even if
        ``expected_sha256`` does not match.
    expected_dtype : numpy.dtype, optional
        The element type the file must declare in its type byte (checked before the payload).

    Returns
    -------
    numpy.ndarray
        Native-endian array with the shape from the header; a fresh copy
        that the caller may modify.

    Raises
    ------
    DataFileError
        If the file is malformed, corrupt, truncated or fails verification.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw:
        raise DataFileError(path, "empty file (0 bytes)")
    if is_gzip(raw):
        content = gunzip(raw, path)
    elif path.suffix == ".gz":
        raise DataFileError(path, f"not a gzip file: starts with {raw[:2]!r}, expected {GZIP_MAGIC!r}")
    else:
        content = raw
    if expected_dtype is not None:
        declared = parse_header(content, path).dtype
        if declared.newbyteorder("=") != np.dtype(expected_dtype).newbyteorder("="):
            code = _CODE_BY_KIND[(declared.kind, declared.itemsize)]
            want = _CODE_BY_KIND[(np.dtype(expected_dtype).kind, np.dtype(expected_dtype).itemsize)]
            raise DataFileError(path, f"wrong IDX type byte {_type_name(code)}: this file must hold {_type_name(want)}")
    array = decode_idx(content, path)
    verify_digests(content, raw, path, expected_sha256=expected_sha256, accepted_gz_md5=accepted_gz_md5)
    return array


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as uncompressed IDX bytes.

    Parameters
    ----------
    array : numpy.ndarray
        At least one dimension; dtype uint8, int8, int16, int32, float32
        or float64.

    Returns
    -------
    bytes
    """
    array = np.asarray(array)
    code = _CODE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(f"dtype {array.dtype} cannot be stored in IDX")
    if array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write an array as an IDX file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination.
    array : numpy.ndarray
        See :func:`encode_idx`.
    compress : bool, optional
        Gzip the file; by default only if ``path`` ends in ``.gz``.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    data = encode_idx(array)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
