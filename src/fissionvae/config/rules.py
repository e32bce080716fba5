"""Cross-field rules of a run configuration, checked before any data is read or file written."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from fissionvae.config.schema import (
    KNOWN_DATASETS,
    PRIOR_STRATEGIES,
    ConfigError,
    FederationConfig,
    GanConfig,
    GroupConfig,
    ModelConfig,
    RunConfig,
)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks; raises ConfigError naming the offending option."""
    check_run_name(cfg.name, "name")
    groups = cfg.data.groups
    if not groups:
        raise ConfigError("data.groups: at least one group is required")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.groups: group names must be unique, got {names}")
    for i, g in enumerate(groups):
        _validate_group(g, f"data.groups[{i}]", cfg)
    shapes = {g.name: group_image_shape(g) for g in groups}
    if len(set(shapes.values())) > 1:
        raise ConfigError(f"data.groups: every group must have the same image shape (C, H, W), got {shapes}")
    _validate_model(cfg.model, len(groups))
    _positive(cfg.train, "train", ("rounds", "local_epochs", "batch_size", "centralized_epochs"))
    if cfg.train.local_steps is not None and cfg.train.local_steps < 1:
        raise ConfigError(f"train.local_steps: must be >= 1 (or null for local_epochs), got {cfg.train.local_steps}")
    if not cfg.train.lr > 0:
        raise ConfigError(f"train.lr: must be > 0, got {cfg.train.lr}")
    if not 0.0 < cfg.federation.participation <= 1.0:
        raise ConfigError(f"federation.participation: must be in (0, 1], got {cfg.federation.participation}")
    _positive(cfg.federation, "federation", ("threads", "max_failed_rounds"))
    _validate_robustness(cfg.federation)
    if cfg.federation.workers < 0:
        raise ConfigError(f"federation.workers: must be >= 0 (0 = auto, 1 = in-process), got {cfg.federation.workers}")
    if cfg.federation.workers > 1 and cfg.train.device != "cpu":
        raise ConfigError(
            f"federation.workers: worker processes train on the CPU; use 0 or 1 with train.device {cfg.train.device!r}"
        )
    _validate_device(cfg.train.device)
    _positive(cfg.eval, "eval", ("test_per_group", "grid_size", "recon_per_group"))
    from fissionvae.privacy.settings import validate_privacy  # imports models, which import this package

    validate_privacy(cfg)


def _validate_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {device!r} is not a device ({exc})") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"train.device: {device!r}: only 'cpu' and 'cuda[:N]' are supported")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {device!r} asked for, but this PyTorch sees no CUDA device; use 'cpu'")


def group_image_shape(g: GroupConfig) -> tuple[int, int, int]:
    """(C, H, W) of a group's images: grey 28x28 MNIST-style, 32x32 RGB stand-ins, RGB folders."""
    if g.dataset == "folder" and g.folder is not None:
        return (3, g.folder.size, g.folder.size)
    return (3, 32, 32) if g.dataset.endswith("-rgb") else (1, 28, 28)


def _positive(section: Any, name: str, fields: tuple[str, ...]) -> None:
    for f in fields:
        if getattr(section, f) < 1:
            raise ConfigError(f"{name}.{f}: must be >= 1, got {getattr(section, f)}")


def _validate_group(g: GroupConfig, key: str, cfg: RunConfig) -> None:
    check_run_name(g.name, f"{key}.name", what="a group name (it names image files)")
    if g.dataset not in KNOWN_DATASETS:
        raise ConfigError(f"{key}.dataset: unknown dataset {g.dataset!r} (known: {list(KNOWN_DATASETS)})")
    if g.clients < 1:
        raise ConfigError(f"{key}.clients: must be >= 1, got {g.clients}")
    if g.train_size is not None and g.train_size < g.clients:
        raise ConfigError(f"{key}.train_size: {g.train_size} images cannot be split over {g.clients} client(s)")
    if g.test_size is not None and g.test_size < 1:
        raise ConfigError(f"{key}.test_size: must be >= 1, got {g.test_size}")
    if g.decoder is not None:
        _validate_widths(g.decoder, f"{key}.decoder", ("hidden", "latent_hidden", "head"))
    if g.decoder is not None and not cfg.model.decoder_branches:
        raise ConfigError(f"{key}.decoder: a per-group decoder needs model.decoder_branches: true")
    if (g.dataset == "folder") != (g.folder is not None):
        raise ConfigError(
            f"{key}.folder: set it exactly when dataset is 'folder' "
            f"(dataset {g.dataset!r}, folder {'set' if g.folder else 'missing'})"
        )
    if g.folder is not None:
        if g.folder.size < 4:
            raise ConfigError(f"{key}.folder.size: must be >= 4, got {g.folder.size}")
        if g.folder.test is None and not 0.0 < g.folder.test_fraction < 1.0:
            raise ConfigError(f"{key}.folder.test_fraction: must be in (0, 1), got {g.folder.test_fraction}")


def _validate_gan(m: ModelConfig) -> None:
    """A DCGAN has no group priors, branches or encoder: every VAE field must keep its default."""
    vae_defaults = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        if f.name not in ("kind", "gan") and getattr(m, f.name) != getattr(vae_defaults, f.name):
            raise ConfigError(
                f"model.{f.name}: a VAE setting, but model.kind is 'dcgan' (a DCGAN has no group priors, "
                "branches or encoder); set the GAN through model.gan (noise_dim, g_features, d_features, beta1, beta2)"
            )
    g = m.gan or GanConfig()
    _positive(g, "model.gan", ("noise_dim", "g_features", "d_features"))
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(g, name) < 1.0:
            raise ConfigError(f"model.gan.{name}: must be in [0, 1), got {getattr(g, name)}")


def _validate_model(m: ModelConfig, num_groups: int) -> None:
    if m.kind == "dcgan":
        _validate_gan(m)
        return
    if m.gan is not None:
        raise ConfigError("model.gan: only for model.kind: dcgan (this model is a VAE)")
    if m.prior not in PRIOR_STRATEGIES:
        raise ConfigError(f"model.prior: {m.prior!r} is not one of {list(PRIOR_STRATEGIES)}")
    if not m.kl_weight >= 0:
        raise ConfigError(f"model.kl_weight: must be >= 0, got {m.kl_weight}")
    if m.dlml_components < 1:
        raise ConfigError(f"model.dlml_components: must be >= 1, got {m.dlml_components}")
    _validate_widths(m, "model", ("encoder_hidden", "z2_encoder_hidden", "encoder_head"))
    _validate_widths(m.decoder, "model.decoder", ("hidden", "latent_hidden", "head"))
    for name in ("gaussian_std_init", "gaussian_std_lr"):
        if not getattr(m, name) > 0 or not math.isfinite(getattr(m, name)):
            raise ConfigError(f"model.{name}: must be a positive finite number, got {getattr(m, name)}")
    if m.latent_dim < 1 or m.z2_dim < 1:
        raise ConfigError("model.latent_dim and model.z2_dim must be >= 1")
    if m.prior == "learnable" and not m.hierarchical:
        raise ConfigError("model.prior: 'learnable' exists only for hierarchical models (model.hierarchical: true)")
    if m.prior in ("wave", "one-hot") and m.latent_dim < num_groups:
        raise ConfigError(
            f"model.prior: {m.prior!r} needs model.latent_dim >= number of groups, "
            f"got latent_dim={m.latent_dim} for {num_groups} groups"
        )


def _validate_widths(section: Any, name: str, fields: tuple[str, ...]) -> None:
    """Every layer width (channels or units) in the listed ``list[int]`` fields is >= 1."""
    for f in fields:
        for i, width in enumerate(getattr(section, f)):
            if width < 1:
                raise ConfigError(f"{name}.{f}[{i}]: a layer width must be >= 1, got {width}")


def check_run_name(name: str, option: str, what: str = "a run name (it names a folder under --runs-dir)") -> None:
    """``name`` is one plain path component: no separator, not absolute, not ``.`` or ``..``, not hidden."""
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise ConfigError(f"{option}: {name!r} is not {what}; use a plain name without '/', '\\' or a leading '.'")


def check_max_rounds(max_rounds: int | None) -> None:
    """``--max-rounds`` is a positive number of rounds (or absent: to the end)."""
    if max_rounds is not None and max_rounds < 1:
        raise ConfigError(f"--max-rounds: must be >= 1 (or left out to train to the end), got {max_rounds}")


def check_override_applies(cfg: RunConfig, overrides: list[str]) -> None:
    """Refuse a ``--set`` that the run would silently ignore.

    A centralised run trains ``train.centralized_epochs`` epochs, one round each; ``train.rounds``
    (federated rounds) means nothing there, so setting it on the command line is an error rather
    than a no-op (a config file may still carry it: presets serve both modes).
    """
    if cfg.mode != "centralized":
        return
    for item in overrides:
        if item.split("=", 1)[0].strip() == "train.rounds":
            raise ConfigError(
                "--set train.rounds: a centralised run (mode: centralized) runs train.centralized_epochs "
                "epochs, one round each; set train.centralized_epochs instead"
            )


def check_subset_sizes(g: GroupConfig, key: str, n_train: int, n_test: int) -> None:
    """A group's ``train_size``/``test_size`` against the images its dataset really has.

    Larger than the split is an error naming the option (it used to be clamped silently).
    """
    for option, size, n, split in (
        ("train_size", g.train_size, n_train, "training"),
        ("test_size", g.test_size, n_test, "test"),
    ):
        if size is not None and size > n:
            raise ConfigError(f"{key}.{option}: {size} asked for, but {g.dataset} has {n} {split} images")


def check_client_counts(cfg: RunConfig, train_images: list[int]) -> None:
    """Every federated group has at least one training image per client (``train_images`` per group)."""
    if cfg.mode != "federated":
        return
    for i, (g, n) in enumerate(zip(cfg.data.groups, train_images, strict=True)):
        if g.clients > n:
            raise ConfigError(f"data.groups[{i}].clients: {g.clients} clients but only {n} training images to split")


def _validate_robustness(f: FederationConfig) -> None:
    if not 0.0 <= f.trim_fraction < 0.5:
        raise ConfigError(f"federation.trim_fraction: must be in [0, 0.5), got {f.trim_fraction}")
    if f.clip_norm is not None and not (0.0 < f.clip_norm < math.inf):
        raise ConfigError(
            f"federation.clip_norm: must be a finite number > 0 (or null: no clipping), got {f.clip_norm}"
        )
