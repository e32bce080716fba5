"""DCGAN (Radford, Metz and Chintala, 2016): the generator and discriminator of the FedGAN baseline.

FedGAN (Rasouli, Sun and Rajagopal, 2020) trains a GAN with FedAvg: every participant trains its
local generator *and* discriminator on its own data, and the server averages both networks
weighted by sample count. Here that is the engine's own round loop and
:func:`~fissionvae.federation.aggregation.aggregate`; this module supplies only the model and its
hooks (``local_optimizer``/``local_step`` for :func:`~fissionvae.federation.client.client_update`,
``terms`` for the per-round test metrics, ``sample`` for generation and evaluation).

Architecture for an S x S image with C channels, S = B * 2^k with B in {4, 7} (28 x 28: B = 7,
k = 2; 32 x 32: B = 4, k = 3), f = ``g_features``, h = ``d_features``:

- generator: z (``noise_dim``) -> ConvT(B x B, stride 1) to f*2^(k-1) maps at B x B, BN, ReLU ->
  (k - 1) x [ConvT 4x4 stride 2, halving the maps, BN, ReLU] -> ConvT 4x4 stride 2 to C maps,
  tanh. Images are (tanh + 1) / 2, i.e. in [0, 1] like the data.
- discriminator: the data rescaled to [-1, 1] -> Conv 4x4 stride 2 to h maps, LeakyReLU(0.2)
  (no BN on the input layer) -> (k - 1) x [Conv 4x4 stride 2, doubling the maps, BN,
  LeakyReLU(0.2)] -> Conv B x B to one logit.
- no biases before BN (nor in the output layers, as in the reference implementation); weights
  N(0, 0.02), BN scales N(1, 0.02), BN shifts 0.

Loss, per minibatch of real images x and as many z ~ N(0, I): the discriminator step minimises
BCE(D(x), 1) + BCE(D(G(z)), 0) (fakes detached); then the generator step minimises the
non-saturating BCE(D(G(z)), 1) = -log sigmoid(D(G(z))) through the just-updated discriminator.
Both with Adam (``train.lr``, betas (``model.gan.beta1``, ``model.gan.beta2``) = (0.5, 0.999)).

BatchNorm running statistics are state-dict entries like the weights, so FedAvg averages them
(weighted by sample count; ``num_batches_tracked`` takes the maximum), exactly as for the VAEs.
The GAN is unconditional: it has no group prior or branch, ignores group ids in training and
draws every group's samples from the same generator (see docs/fedgan.md for what evaluation does
with that).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fissionvae.config import ConfigError, GanConfig, RunConfig
from fissionvae.models.groups import GroupNamed
from fissionvae.seeding import stream_seed


def dcgan_layout(side: int) -> tuple[int, int]:
    """(base side B, number of stride-2 layers k) with side = B * 2^k, B in {4, 7}, k >= 1."""
    for base in (7, 4):
        k = math.log2(side / base) if side % base == 0 else -1
        if k >= 1 and k == int(k):
            return base, int(k)
    raise ConfigError(
        f"model.kind dcgan: image side {side} is not 4 * 2^k or 7 * 2^k (k >= 1); e.g. 28 and 32 are supported"
    )


def _init_dcgan(module: nn.Module) -> None:
    """Radford et al.'s initialisation: conv weights N(0, 0.02); BN scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """z (B, noise_dim) -> images (B, C, S, S) in [-1, 1] (tanh)."""

    def __init__(self, noise_dim: int, features: int, image_shape: tuple[int, int, int]):
        super().__init__()
        c, side, _ = image_shape
        base, k = dcgan_layout(side)
        width = features * 2 ** (k - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(noise_dim, width, base, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(k - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, c, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Images (B, C, S, S) in [-1, 1] -> logits (B,)."""

    def __init__(self, features: int, image_shape: tuple[int, int, int]):
        super().__init__()
        c, side, _ = image_shape
        base, k = dcgan_layout(side)
        width = features
        layers: list[nn.Module] = [nn.Conv2d(c, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for _ in range(k - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width * 2),
                nn.LeakyReLU(0.2, True),
            ]
            width *= 2
        layers += [nn.Conv2d(width, 1, base, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()


class GanOptimizer:
    """Adam for the generator (``g``) and one for the discriminator (``d``), with one state dict."""

    def __init__(self, g: torch.optim.Optimizer, d: torch.optim.Optimizer):
        self.g, self.d = g, d

    def state_dict(self) -> dict:
        return {"g": self.g.state_dict(), "d": self.d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"g", "d"}:
            raise ValueError(f"a DCGAN optimiser state has entries 'g' and 'd', got {sorted(state)} (a VAE's state?)")
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])


def _bce(logits: Tensor, target: float) -> Tensor:
    """Per-image binary cross-entropy of logits against a constant label (nats)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none")


def nearest_neighbour_rms(images: Tensor) -> Tensor:
    """Per image: RMS pixel distance to its nearest *other* image of the batch (NaN for one image)."""
    flat = images.flatten(1).double()
    if flat.shape[0] < 2:
        return torch.full((flat.shape[0],), float("nan"), dtype=images.dtype, device=images.device)
    d = torch.cdist(flat, flat)
    d.fill_diagonal_(float("inf"))
    return (d.min(1).values / math.sqrt(flat.shape[1])).to(images.dtype)


class DCGAN(GroupNamed, nn.Module):
    """Generator + discriminator with the model interface the engine and evaluation use."""

    kind = "dcgan"  # model.kind
    progress_terms: tuple[str, ...] = ("d_loss", "g_loss")  # test terms the training progress bar shows

    def __init__(self, cfg: GanConfig, group_names: list[str], image_shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        _, h, w = image_shape
        if h != w:
            raise ConfigError(f"model.kind dcgan: square images only, got {h} x {w}")
        self.cfg = cfg
        self.group_names = list(group_names)
        self.image_shape = (int(image_shape[0]), h, w)
        self.generator = Generator(cfg.noise_dim, cfg.g_features, self.image_shape)
        self.discriminator = Discriminator(cfg.d_features, self.image_shape)
        _init_dcgan(self)

    # ------------------------------------------------------------------ structure
    def owned_keys(self, groups: list[int]) -> list[str]:
        """FedGAN: every client trains and sends back both networks, whatever its group."""
        return list(self.state_dict())

    def owned_parameters(self, groups: list[int]) -> list[nn.Parameter]:
        return list(self.parameters())

    # ------------------------------------------------------------------ local training (client_update's hooks)
    def local_optimizer(self, groups: list[int], lr: float, fused: bool) -> GanOptimizer:
        betas = (self.cfg.beta1, self.cfg.beta2)
        return GanOptimizer(
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas, fused=fused or None),
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas, fused=fused or None),
        )

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), drawn on the generator's device (the seeded streams are CPU generators)."""
        device = next(self.parameters()).device
        z = torch.randn(
            n, self.cfg.noise_dim, generator=generator, device=generator.device if generator is not None else device
        )
        return z.to(device)

    def local_step(
        self, x: Tensor, group_ids: Tensor, optimizer: GanOptimizer, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """One discriminator step, then one non-saturating generator step; per-image terms.

        ``d_loss`` = BCE(D(x), 1) + BCE(D(G(z)), 0) and ``d_real``/``d_fake`` = sigmoid of the
        logits, all before the discriminator's update; ``g_loss`` = BCE(D(G(z)), 1) after it.
        """
        fake = self.generator(self.noise(x.shape[0], generator))
        real_logit = self.discriminator(x * 2 - 1)
        fake_logit = self.discriminator(fake.detach())
        d_loss = _bce(real_logit, 1.0) + _bce(fake_logit, 0.0)
        optimizer.d.zero_grad(set_to_none=True)
        d_loss.mean().backward()
        optimizer.d.step()
        g_loss = _bce(self.discriminator(fake), 1.0)
        optimizer.g.zero_grad(set_to_none=True)
        g_loss.mean().backward()
        optimizer.g.step()
        return {
            "d_loss": d_loss.detach(),
            "g_loss": g_loss.detach(),
            "d_real": torch.sigmoid(real_logit.detach()),
            "d_fake": torch.sigmoid(fake_logit.detach()),
        }

    # ------------------------------------------------------------------ held-out terms (per-round test metrics)
    def terms(self, x: Tensor, group_ids: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-image terms on held-out images ``x`` and as many fresh samples.

        ``d_loss``, ``g_loss``, ``d_real``, ``d_fake`` as in :meth:`local_step`;
        ``sample_nn_rms`` (``real_nn_rms``) is the RMS pixel distance in [0, 1] units from each
        generated (held-out) image to its nearest other one in the batch: samples far closer to
        each other than real images are a cheap sign of mode collapse.
        """
        fake = self.generator(self.noise(x.shape[0], generator))
        real_logit = self.discriminator(x * 2 - 1)
        fake_logit = self.discriminator(fake)
        return {
            "d_loss": _bce(real_logit, 1.0) + _bce(fake_logit, 0.0),
            "g_loss": _bce(fake_logit, 1.0),
            "d_real": torch.sigmoid(real_logit),
            "d_fake": torch.sigmoid(fake_logit),
            "sample_nn_rms": nearest_neighbour_rms((fake + 1) / 2),
            "real_nn_rms": nearest_neighbour_rms(x),
        }

    # ------------------------------------------------------------------ generation
    def default_pathway(self) -> str:
        return "z"

    @torch.no_grad()
    def sample(
        self,
        group: int | str,
        n: int,
        generator: torch.Generator | None = None,
        pathway: str | None = None,
        prior_group: int | str | None = None,
    ) -> Tensor:
        """``n`` images G(z), z ~ N(0, I), in [0, 1]. An unconditional GAN draws every group's
        samples from the same distribution: ``group`` is only checked."""
        self.group_index(group)
        if pathway not in (None, "z"):
            raise ValueError(f"a DCGAN has one generation pathway, 'z' (z ~ N(0, I) -> G(z)); got {pathway!r}")
        if prior_group is not None:
            raise ValueError("a DCGAN has no group priors (prior_group is for VAEs with group priors)")
        return (self.generator(self.noise(n, generator)) + 1) / 2


def build_gan(cfg: RunConfig, image_shape: tuple[int, int, int] = (1, 28, 28)) -> DCGAN:
    """The run's DCGAN, initialised from the run seed's ``init`` stream (same weights everywhere)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        return DCGAN(cfg.model.gan or GanConfig(), cfg.group_names, image_shape)
