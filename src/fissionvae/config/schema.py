"""The run configuration's schema: one dataclass per section, with defaults and comments.

A run's identity is a digest of its config (:func:`fissionvae.studies.common.config_digest`). A new
key whose default computes what runs did before it existed goes into
:data:`fissionvae.studies.common.LATER_DEFAULTS` too, or it changes every recorded run's identity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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
    # robust aggregation (docs/engine.md "Hostile clients"): the rule that merges the accepted replies
    # of each key's senders: "fedavg" (sample-weighted mean, the papers'), "trimmed_mean"
    # (coordinate-wise, drops floor(trim_fraction * senders) values at each end) or "median"
    # (coordinate-wise); off by default
    aggregator: Literal["fedavg", "trimmed_mean", "median"] = "fedavg"
    trim_fraction: float = 0.1  # trimmed_mean only: fraction cut at each end, in [0, 0.5)
    # server-side update-norm clip: each accepted reply's update (weights - global) is scaled to L2
    # norm at most this before aggregation; null = off
    clip_norm: float | None = None
    # consecutive rounds in which replies came back but every one was rejected before the run stops
    # with status "failed"
    max_failed_rounds: int = 3


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
class PrivacyConfig:
    """Differential privacy (docs/privacy.md); rules in :func:`fissionvae.privacy.settings.validate_privacy`.

    ``mode``: ``none``; ``record`` (DP-SGD at every client: each image of a silo is protected) or
    ``client`` (DP-FedAvg: each client's whole data set is protected). Give exactly one of
    ``target_epsilon`` (the noise multiplier is calibrated for the whole run) and ``noise_multiplier``.
    """

    mode: Literal["none", "record", "client"] = "none"
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float | None = None
    clip_norm: float | None = None  # record: per-sample gradient norm; client: whole-update norm
    accountant: Literal["rdp", "prv"] = "rdp"
    # record only: how Opacus gets per-sample gradient norms (bench/dp_speed.py measures them); auto =
    # ghost clipping (fastest), or hooks for hierarchical models (their decoder runs twice per image)
    grad_sample_mode: Literal["auto", "ghost", "hooks", "functorch"] = "auto"


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
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.data.groups]

    @property
    def effective_rounds(self) -> int:
        """Rounds the engine runs: centralised training runs one round per epoch."""
        return self.train.centralized_epochs if self.mode == "centralized" else self.train.rounds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
