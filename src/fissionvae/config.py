"""Typed run configuration: YAML presets -> dataclasses, strict and validated.

A config file is YAML. It may name a parent preset with ``extends: other.yaml`` (a path
relative to the file); the child is deep-merged over the parent. Command-line overrides
(``--set train.rounds=3``) are applied to the merged dictionary before it becomes
dataclasses. Unknown keys and wrongly typed values are errors that name the dotted key.
Cross-field rules (e.g. ``wave`` priors need ``latent_dim >= number of groups``) are
checked by :func:`validate` before any training starts.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PRIOR_STRATEGIES = ("identical", "one-hot", "symmetrical", "random", "wave", "learnable")
KNOWN_DATASETS = ("mnist", "fashion-mnist", "mnist-rgb", "fashion-mnist-rgb", "folder")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or inconsistent."""


@dataclass
class DecoderConfig:
    """Architecture of one decoder branch.

    ``kind`` selects p(x|z1): ``mlp`` (hidden widths in ``hidden``) or ``conv``
    (a linear layer to ``hidden[0]`` channels at 1/4 resolution, then transposed
    convolutions through ``hidden``). ``latent_hidden`` are the hidden widths of
    p(z1|z2), used by hierarchical models only.
    """

    kind: Literal["mlp", "conv", "conv-mirror", "strided"] = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256, 512])
    latent_hidden: list[int] = field(default_factory=lambda: [64, 64])
    head: list[int] = field(default_factory=list)  # strided: MLP widths from z1 to the first feature map
    # conv-mirror: normalise the decoder's output logits (Dugdale's notebook: BatchNorm2d(1) before the
    # sigmoid). false drops that last normalisation layer (our deviation; docs/results/dugdale.md)
    output_norm: bool = True


@dataclass
class FolderConfig:
    """Images of a ``dataset: folder`` group (docs/rgb.md).

    ``train`` and ``test`` are folders searched recursively; relative paths are taken from the
    working directory and made absolute when the config is loaded. Without ``test``, a seeded
    ``test_fraction`` of the training folder is held out. Images are centre-cropped to a square
    and resized to ``size`` x ``size`` with the Pillow filter ``resample``; ``strict`` makes an
    unreadable or non-image file an error instead of a skipped file named in a warning.
    ``labels: subfolder`` labels each image by the folder holding it, relative to the group folder.
    """

    train: str
    test: str | None = None
    test_fraction: float = 0.1
    size: int = 32
    resample: Literal["bicubic", "bilinear", "lanczos", "box", "nearest"] = "bicubic"
    strict: bool = False
    labels: Literal["subfolder", "none"] = "subfolder"

    def __post_init__(self) -> None:
        self.train = _absolute(self.train)
        self.test = _absolute(self.test) if self.test is not None else None


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().absolute()) if isinstance(path, str) else path


@dataclass
class GroupConfig:
    """One client group: a source dataset split IID over ``clients`` clients."""

    name: str
    dataset: str
    clients: int = 10
    train_size: int | None = None  # seeded subset of the training split; None = all
    test_size: int | None = None  # seeded subset of the test split; None = all
    decoder: DecoderConfig | None = None  # heterogeneous branch; None = model.decoder
    folder: FolderConfig | None = None  # required exactly when dataset is "folder"


@dataclass
class DataConfig:
    dir: str | None = None  # else $FISSIONVAE_DATA_DIR, else the user cache
    download: bool = True
    groups: list[GroupConfig] = field(default_factory=list)


@dataclass
class GanConfig:
    """The DCGAN of ``model.kind: dcgan`` (FedGAN baseline; docs/fedgan.md).

    Feature maps double at every stride-2 layer: the generator's last hidden layer has
    ``g_features`` maps, the discriminator's first has ``d_features``. Both networks train with
    Adam(``train.lr``, betas (``beta1``, ``beta2``)) on the non-saturating loss.
    """

    noise_dim: int = 100  # z ~ N(0, I) of this size
    g_features: int = 64
    d_features: int = 64
    beta1: float = 0.5  # DCGAN's Adam betas (Radford et al., 2016)
    beta2: float = 0.999


@dataclass
class ModelConfig:
    # "vae": FissionVAE/FedVAE (every field below but ``gan``); "dcgan": the FedGAN baseline,
    # configured by ``gan`` only (the VAE fields must keep their defaults)
    kind: Literal["vae", "dcgan"] = "vae"
    gan: GanConfig | None = None  # only with kind: dcgan (None there means GanConfig())
    latent_dim: int = 16
    prior: str = "identical"
    kl_weight: float = 1.0  # beta: weight of every KL term in the training loss (not in neg_elbo)
    encoder_kind: Literal["mlp", "conv", "strided"] = "mlp"  # conv: kernel-3 convs; strided: stride-2 convs (RGB)
    encoder_head: list[int] = field(default_factory=list)  # strided: MLP widths from the features to q(z1|x)
    norm: Literal["none", "batch", "group"] = "none"  # normalisation in conv encoders/decoders
    decoder_branches: bool = False
    hierarchical: bool = False
    z2_dim: int = 8
    encoder_hidden: list[int] = field(default_factory=lambda: [512, 256])
    z2_encoder_hidden: list[int] = field(default_factory=lambda: [64, 64])
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    likelihood: Literal["bernoulli", "gaussian", "dlml"] = "bernoulli"
    dlml_components: int = 10  # K of the discretised logistic mixture (likelihood: dlml)
    # likelihood: gaussian. The one std shared by all pixels, images, branches and groups (the paper's
    # "shared global variance"): "learned" (trained, Adam lr gaussian_std_lr, from gaussian_std_init on
    # the [-1, 1] scale) or "calibrated" (sigma-VAE: closed form from each batch's mean squared error)
    gaussian_std: Literal["learned", "calibrated"] = "learned"
    gaussian_std_init: float = 0.5
    gaussian_std_lr: float = 0.01


@dataclass
class FederationConfig:
    participation: float = 0.5  # Bernoulli(p) per client per round
    threads: int = 1  # torch intra-op threads per training process
    # Adam state between a client's local updates: "reset" (a fresh Adam every round; clients are
    # stateless) or "keep" (each client continues its own Adam moments, as Dugdale's notebook does;
    # the states are part of the server state/checkpoint in simulation).
    client_optimizer: Literal["reset", "keep"] = "reset"
    # processes training a round's clients in parallel: 1 = in the server process, one after
    # another; N > 1 = a pool of N worker processes; 0 = auto (a pool of min(cores // threads,
    # expected participants) where the run is big enough to pay for it; docs/engine.md)
    workers: int = 0


@dataclass
class TrainConfig:
    rounds: int = 70
    local_epochs: int = 5
    # federated only: when set, every participant trains exactly this many minibatch steps per
    # round (reshuffling its data as often as needed) instead of ``local_epochs`` epochs
    local_steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-3
    fused_adam: bool = True
    centralized_epochs: int = 70
    # where clients train and the per-round test loss runs: "cpu" (bit-reproducible) or "cuda[:N]"
    # (faster for conv models; random draws still come from the seeded CPU streams, but GPU kernels
    # are not bit-reproducible). Checkpoints and aggregation stay on the CPU either way.
    device: str = "cpu"


@dataclass
class EvalConfig:
    test_per_group: int = 1000  # test images per group for the per-round test loss
    grid_size: int = 64  # images per generation grid written into the run folder
    recon_per_group: int = 16


@dataclass
class RunConfig:
    name: str = "run"
    mode: Literal["federated", "centralized"] = "federated"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.data.groups]

    @property
    def effective_rounds(self) -> int:
        """Rounds the engine runs: centralised training runs one round per epoch."""
        return self.train.centralized_epochs if self.mode == "centralized" else self.train.rounds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (recursively); return the typed value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(value, non_none[0], key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a dict; unknown keys and bad types raise ConfigError."""
    where = prefix or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        dotted = ", ".join(f"{prefix + '.' if prefix else ''}{k}" for k in unknown)
        raise ConfigError(f"unknown config key(s): {dotted} (valid here: {sorted(names)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required but missing")
    return cls(**kwargs)


# --------------------------------------------------------------------------- files


def deep_merge(base: dict, override: dict) -> dict:
    """Return ``base`` with ``override`` merged in (dicts recursively, anything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_yaml_with_extends(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read a YAML preset, resolving ``extends:`` chains relative to each file."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: 'extends' cycle through {[str(p) for p in _seen]}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    base = load_yaml_with_extends(path.parent / parent, _seen + (path,))
    return deep_merge(base, raw)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config dict.

    List items are addressed by index, e.g. ``data.groups.1.clients=5``.
    """
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, text = item.split("=", 1)
        value = yaml.safe_load(text) if text.strip() else None
        _set_dotted(out, key.strip(), value)
    return out


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[_list_index(node, part, parts, i)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, parts, len(parts) - 1)] = value
    else:
        node[last] = value


def _list_index(node: list, part: str, parts: list[str], i: int) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(
            f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not an index of a {len(node)}-item list"
        )
    return int(part)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, raw: dict | None = None
) -> RunConfig:
    """Load, override, type-check and validate a run configuration."""
    base = load_yaml_with_extends(path) if path is not None else copy.deepcopy(raw or {})
    cfg = from_dict(RunConfig, apply_overrides(base, overrides or []))
    validate(cfg)
    return cfg


def save_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved configuration atomically as YAML."""
    from fissionvae.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- rules


def validate(cfg: RunConfig) -> None:
    """Cross-field checks; raises ConfigError naming the offending option."""
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
    _positive(cfg.federation, "federation", ("threads",))
    if cfg.federation.workers < 0:
        raise ConfigError(f"federation.workers: must be >= 0 (0 = auto, 1 = in-process), got {cfg.federation.workers}")
    if cfg.federation.workers > 1 and cfg.train.device != "cpu":
        raise ConfigError(
            f"federation.workers: worker processes train on the CPU; use 0 or 1 with train.device {cfg.train.device!r}"
        )
    _validate_device(cfg.train.device)
    _positive(cfg.eval, "eval", ("test_per_group", "grid_size", "recon_per_group"))


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
    if g.dataset not in KNOWN_DATASETS:
        raise ConfigError(f"{key}.dataset: unknown dataset {g.dataset!r} (known: {list(KNOWN_DATASETS)})")
    if g.clients < 1:
        raise ConfigError(f"{key}.clients: must be >= 1, got {g.clients}")
    if g.train_size is not None and g.train_size < g.clients:
        raise ConfigError(f"{key}.train_size: {g.train_size} images cannot be split over {g.clients} client(s)")
    if g.test_size is not None and g.test_size < 1:
        raise ConfigError(f"{key}.test_size: must be >= 1, got {g.test_size}")
    if g.decoder is not None and not cfg.model.decoder_branches:
        raise ConfigError(f"{key}.decoder: a per-group decoder needs model.decoder_branches: true")
    if (g.dataset == "folder") != (g.folder is not None):
        raise ConfigError(
            f"{key}.folder: set it exactly when dataset is 'folder' (dataset {g.dataset!r}, folder {'set' if g.folder else 'missing'})"
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
    for name in ("gaussian_std_init", "gaussian_std_lr"):
        if not getattr(m, name) > 0 or not math.isfinite(getattr(m, name)):
            raise ConfigError(f"model.{name}: must be a positive finite number, got {getattr(m, name)}")
    if m.latent_dim < 1 or m.z2_dim < 1:
        raise ConfigError("model.latent_dim and model.z2_dim must be >= 1")
    if m.prior == "learnable" and not m.hierarchical:
        raise ConfigError("model.prior: 'learnable' exists only for hierarchical models (model.hierarchical: true)")
    if m.prior == "wave" and m.latent_dim < num_groups:
        raise ConfigError(
            f"model.prior: 'wave' needs model.latent_dim >= number of groups, got latent_dim={m.latent_dim} for {num_groups} groups"
        )
    if m.prior == "one-hot" and m.latent_dim < num_groups:
        raise ConfigError(
            f"model.prior: 'one-hot' needs model.latent_dim >= number of groups, got latent_dim={m.latent_dim} for {num_groups} groups"
        )
