"""Download mirrors: each dataset's own, or override roots from an argument or ``$FISSIONVAE_MIRROR``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from fissionvae.data.registry import DatasetSpec

__all__ = ["MIRROR_ENV", "file_urls", "resolve_mirrors"]

#: Environment variable with mirror base URLs (whitespace-separated) under which
#: ``<dataset>/<file>`` lives; replaces the built-in mirrors.
MIRROR_ENV = "FISSIONVAE_MIRROR"


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
