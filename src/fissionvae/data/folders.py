"""Image-folder groups: any folder of images becomes a uint8 (N, 3, S, S) array, cached once.

A folder is searched recursively; files and folders whose names start with ``.`` (OS metadata
such as ``.DS_Store``) are ignored. Every other file is opened with Pillow, so the format is
whatever Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM, ...), whatever the extension.
Each image is

1. rotated upright by its EXIF orientation tag;
2. converted to RGB: grey (``L``, ``I;16``) is repeated to three channels; images with alpha
   (``RGBA``, ``LA``, palette images with transparency) are composited over **white**;
3. centre-cropped to the largest central square (offsets ``floor((w - s) / 2)``,
   ``floor((h - s) / 2)``) and resized to ``size x size`` with the Pillow filter named by
   ``resample`` (default ``bicubic``: Pillow's antialiased bicubic, which widens its support
   when downscaling), in one ``Image.resize(..., box=crop)`` call.

Files Pillow cannot decode (a text file, a truncated JPEG) are skipped, counted and named in a
:class:`SkippedFilesWarning`; ``strict=True`` raises :class:`FolderError` instead. A folder
without one readable image is a :class:`FolderError` naming the folder.

The decoded array is cached under ``<cache>/folders/`` (``$FISSIONVAE_CACHE``, else
``$XDG_CACHE_HOME/fissionvae``, else ``~/.cache/fissionvae``), keyed by the sha256 of every
file's relative path and bytes plus the size, filter, label mode and :data:`LOADER_VERSION`:
editing, adding or removing any file misses the cache; an unchanged folder is read (hashed)
but not decoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from fissionvae.io import atomic_write_bytes
from fissionvae.paths import cache_root

LOADER_VERSION = "folder-v1:exif,rgb-over-white,center-square,pillow-resize"
RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
MAX_NAMED = 10


class FolderError(ValueError):
    """A folder group cannot be used: missing, empty, or (strict mode) holding bad files."""


class SkippedFilesWarning(UserWarning):
    """Some files of an image folder could not be decoded and were left out."""


@dataclass(frozen=True)
class FolderImages:
    """A decoded folder: images, labels, the files they came from and the files left out."""

    root: str
    images: np.ndarray  # uint8 (N, 3, S, S)
    labels: np.ndarray  # int64 (N,), index into classes
    classes: tuple[str, ...]  # label names ("" = images directly in the root)
    files: tuple[str, ...]  # relative POSIX paths, in image order
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason)
    key: str


def default_cache_dir() -> Path:
    """``<fissionvae cache>/folders`` (see :func:`fissionvae.paths.cache_root`)."""
    return cache_root() / "folders"


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursively), hidden names excluded, sorted by relative path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in filenames if not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow image -> RGB (16-bit grey scaled to 8 bits; alpha composited over white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(source: str | Path | bytes, size: int, resample: str = "bicubic") -> np.ndarray:
    """One image file (path or bytes) -> uint8 (3, size, size): upright, RGB, centre square, resized."""
    fh = io.BytesIO(source) if isinstance(source, bytes) else source
    with Image.open(fh) as im:
        im = to_rgb(ImageOps.exif_transpose(im))
        w, h = im.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        im = im.resize((size, size), resample=RESAMPLE[resample], box=(left, top, left + s, top + s))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()


def _decode_or_reason(args: tuple[str | bytes, int, str]) -> np.ndarray | str:
    source, size, resample = args
    try:
        return decode_image(source, size, resample)
    except DECODE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}".strip()


def decode_many(
    sources: Sequence[str | bytes],
    size: int,
    resample: str = "bicubic",
    workers: int | ProcessPoolExecutor = 0,
    progress: bool = False,
    desc: str = "decode",
) -> list[np.ndarray | str]:
    """Decode many images (paths or bytes); failures come back as a reason string, in order.

    ``workers > 0`` decodes in that many processes, or pass an open ``ProcessPoolExecutor`` to
    reuse one (results are identical either way; order is kept).
    """
    jobs = [(s, size, resample) for s in sources]
    bar = dict(total=len(jobs), desc=desc, unit="img", disable=not progress)
    if isinstance(workers, ProcessPoolExecutor):
        return list(tqdm(workers.map(_decode_or_reason, jobs, chunksize=32), **bar))
    if workers > 0 and len(jobs) > 64:
        with ProcessPoolExecutor(workers) as pool:
            return list(tqdm(pool.map(_decode_or_reason, jobs, chunksize=64), **bar))
    return [_decode_or_reason(j) for j in tqdm(jobs, **bar)]


def skipped_message(root: str | Path, skipped: Sequence[tuple[str, str]], total: int) -> str:
    names = "; ".join(f"{name} ({reason})" for name, reason in skipped[:MAX_NAMED])
    more = f"; and {len(skipped) - MAX_NAMED} more" if len(skipped) > MAX_NAMED else ""
    return f"{root}: skipped {len(skipped)} of {total} file(s) that are not readable images: {names}{more}"


def folder_key(root: Path, files: list[Path], size: int, resample: str, labels: str) -> str:
    """Content key of a folder: relative path and bytes of every file, and the decoding options."""
    h = hashlib.sha256(f"{LOADER_VERSION}|{size}|{resample}|{labels}".encode())
    for path in files:
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix().encode()
        h.update(len(rel).to_bytes(8, "little") + rel + len(data).to_bytes(8, "little"))
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def _label_of(rel: str, mode: str) -> str:
    return rel.rsplit("/", 1)[0] if mode == "subfolder" and "/" in rel else ""


def load_image_folder(
    root: str | Path,
    size: int = 32,
    resample: str = "bicubic",
    *,
    strict: bool = False,
    labels: str = "subfolder",
    cache_dir: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
) -> FolderImages:
    """Decode (or read from the cache) every image under ``root``; see the module docstring.

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    FolderError
        No readable image at all, or (``strict``) any file that is not a readable image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    if resample not in RESAMPLE:
        raise ValueError(f"resample {resample!r} is not one of {sorted(RESAMPLE)}")
    files = list_files(root)
    key = folder_key(root, files, size, resample, labels)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / f"{key[:32]}.npz"
    result = _read_cache(target, key, str(root))
    if result is None:
        rels = [p.relative_to(root).as_posix() for p in files]
        decoded = decode_many([str(p) for p in files], size, resample, workers, progress, desc=f"images {root.name}")
        good = [(rel, arr) for rel, arr in zip(rels, decoded, strict=True) if not isinstance(arr, str)]
        skipped = tuple((rel, arr) for rel, arr in zip(rels, decoded, strict=True) if isinstance(arr, str))
        classes = tuple(sorted({_label_of(rel, labels) for rel, _ in good}))
        index = {c: i for i, c in enumerate(classes)}
        images = np.stack([a for _, a in good]) if good else np.zeros((0, 3, size, size), np.uint8)
        result = FolderImages(
            str(root),
            images,
            np.array([index[_label_of(rel, labels)] for rel, _ in good], dtype=np.int64),
            classes,
            tuple(rel for rel, _ in good),
            skipped,
            key,
        )
        if good:
            _write_cache(target, result)
    if result.skipped:
        message = skipped_message(root, result.skipped, len(result.files) + len(result.skipped))
        if strict:
            raise FolderError(message.replace("skipped", "strict mode: found", 1))
        warnings.warn(message, SkippedFilesWarning, stacklevel=2)
    if len(result.files) == 0:
        raise FolderError(f"image folder {root} holds no readable image ({len(result.skipped)} other file(s))")
    return result


def _write_cache(target: Path, r: FolderImages) -> None:
    meta = {"key": r.key, "classes": list(r.classes), "files": list(r.files), "skipped": [list(s) for s in r.skipped]}
    buf = io.BytesIO()
    np.savez(buf, images=r.images, labels=r.labels, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    atomic_write_bytes(target, buf.getvalue())


def _read_cache(target: Path, key: str, root: str) -> FolderImages | None:
    if not target.is_file():
        return None
    try:
        with np.load(target) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            if meta.get("key") != key:
                return None
            return FolderImages(
                root,
                data["images"],
                data["labels"],
                tuple(meta["classes"]),
                tuple(meta["files"]),
                tuple(tuple(s) for s in meta["skipped"]),
                key,
            )
    except (OSError, ValueError, KeyError):  # a damaged cache entry is rebuilt
        return None
