"""Rules of the ``privacy:`` config section, checked before anything is written.

Record-level DP-SGD needs per-sample gradient norms from Opacus, which cannot handle layers
whose output for one image depends on the other images of the batch (BatchNorm); such models are
refused with the option that fixes them (``model.norm: group`` swaps BatchNorm for GroupNorm).
The Gaussian pixel likelihood's learned scale is a bare parameter used outside a layer's forward,
so Opacus sees no per-sample gradient for it: refused. Ghost clipping cannot handle a layer used
twice for one image (the hierarchical decoder): those models use Opacus's hooks.
"""

from __future__ import annotations

import importlib.util
import math
from typing import TYPE_CHECKING

from fissionvae.config import ConfigError, PrivacyConfig

if TYPE_CHECKING:
    from fissionvae.config import RunConfig


def validate_privacy(cfg: RunConfig) -> None:
    """Raise ConfigError naming the ``privacy.*`` option that is missing, unknown or inconsistent."""
    p = cfg.privacy
    if p.mode == "none":
        defaults = PrivacyConfig()
        for name in ("target_epsilon", "noise_multiplier", "delta", "clip_norm"):
            if getattr(p, name) != getattr(defaults, name):
                raise ConfigError(f"privacy.{name}: set, but privacy.mode is 'none' (choose 'record' or 'client')")
        return
    if importlib.util.find_spec("opacus") is None:
        raise ConfigError(
            f"privacy.mode {p.mode!r}: needs Opacus, which is not installed (pip install -e '.[privacy]')"
        )
    if (p.target_epsilon is None) == (p.noise_multiplier is None):
        raise ConfigError(
            f"privacy.target_epsilon / privacy.noise_multiplier: give exactly one with privacy.mode {p.mode!r}"
        )
    if p.target_epsilon is not None and not 0 < p.target_epsilon < math.inf:
        raise ConfigError(f"privacy.target_epsilon: must be a finite number > 0, got {p.target_epsilon}")
    if p.noise_multiplier is not None and not 0 <= p.noise_multiplier < math.inf:
        raise ConfigError(f"privacy.noise_multiplier: must be a finite number >= 0, got {p.noise_multiplier}")
    if p.delta is None or not 0 < p.delta < 1:
        raise ConfigError(f"privacy.delta: required with privacy.mode {p.mode!r}, in (0, 1), got {p.delta}")
    if p.clip_norm is None or not p.clip_norm > 0:
        raise ConfigError(f"privacy.clip_norm: required with privacy.mode {p.mode!r}, > 0, got {p.clip_norm}")
    if math.isinf(p.clip_norm) and p.noise_multiplier != 0:
        raise ConfigError("privacy.clip_norm: infinite clipping bounds nothing; only allowed with noise_multiplier 0")
    if p.mode == "client":
        _validate_client_level(cfg)
    else:
        _validate_record_level(cfg)


def grad_sample_mode(cfg: RunConfig) -> str:
    """The resolved ``privacy.grad_sample_mode``: ``auto`` is ghost, or hooks for hierarchical models."""
    mode = cfg.privacy.grad_sample_mode
    if mode == "auto":
        return "hooks" if cfg.model.hierarchical else "ghost"
    return mode


def _validate_client_level(cfg: RunConfig) -> None:
    if cfg.mode == "centralized":
        raise ConfigError("privacy.mode: 'client' protects whole clients; a centralised run has one (use 'record')")
    if cfg.privacy.grad_sample_mode != PrivacyConfig().grad_sample_mode:
        raise ConfigError("privacy.grad_sample_mode: only for privacy.mode 'record'")


def _validate_record_level(cfg: RunConfig) -> None:
    if cfg.model.kind != "vae":
        raise ConfigError(
            f"privacy.mode: record-level DP supports VAEs only; model.kind {cfg.model.kind!r} (DCGAN) has "
            "BatchNorm and two optimisers"
        )
    if cfg.train.device != "cpu":
        raise ConfigError(
            f"train.device: {cfg.train.device!r}: record-level DP draws its noise from the seeded CPU streams "
            "(Opacus adds it on the parameters' device); use cpu"
        )
    if cfg.model.norm == "batch":
        raise ConfigError(
            "model.norm: 'batch' mixes the images of a batch, so per-sample gradients (DP-SGD) are undefined; "
            "set model.norm: group (GroupNorm) for privacy.mode 'record'"
        )
    if cfg.model.likelihood == "gaussian":
        raise ConfigError(
            "model.likelihood: 'gaussian' learns one pixel scale outside any layer, for which Opacus has no "
            "per-sample gradient; use bernoulli or dlml with privacy.mode 'record'"
        )
    if cfg.model.hierarchical and cfg.privacy.grad_sample_mode == "ghost":
        raise ConfigError(
            "privacy.grad_sample_mode: ghost clipping cannot handle a layer used twice per image (a hierarchical "
            "model's decoder); use auto, hooks or functorch"
        )
    unsupported = unsupported_layers(cfg)
    if unsupported:
        raise ConfigError(f"privacy.mode: Opacus cannot compute per-sample gradients of {unsupported[:3]}")


def unsupported_layers(cfg: RunConfig) -> list[str]:
    """Names of the model's trainable layers Opacus refuses (layers with buffers, e.g. BatchNorm)."""
    from opacus.grad_sample import GradSampleModule

    from fissionvae.config import group_image_shape
    from fissionvae.models.vae import build_model

    model = build_model(cfg, group_image_shape(cfg.data.groups[0]))
    return [str(e).split("(", 1)[-1].rstrip(" ).") for e in GradSampleModule.validate(model, strict=False)]
