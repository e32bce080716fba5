"""Where fissionvae keeps its caches (the Inception network, FID statistics, decoded image folders).

A leaf module (standard library only), so that data loading and evaluation can both use it
without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the cache folder.
ENV_CACHE = "FISSIONVAE_CACHE"


def cache_root() -> Path:
    """Return the fissionvae cache directory (not created).

    Returns
    -------
    Path
        ``$FISSIONVAE_CACHE``, else ``$XDG_CACHE_HOME/fissionvae``, else ``~/.cache/fissionvae``.
    """
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "fissionvae"
    return Path.home() / ".cache" / "fissionvae"
