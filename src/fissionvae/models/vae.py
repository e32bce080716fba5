"""One VAE interface for every FissionVAE variant (Table 1 of the paper).

``FissionVAE`` covers FedVAE, +L, +D, +L+D and +H+L+D, selected by ``ModelConfig``:

- ``encoder.x`` is q(z1|x); hierarchical models add ``encoder.z1`` = q(z2|z1). The encoder is
  shared by all groups and aggregated over every participant.
- ``branches[b]`` is one decoder branch: ``x`` = p(x|z1), ``likelihood`` (pixel model) and, for
  hierarchical models, ``z1`` = p(z1|z2). With ``decoder_branches`` there is one branch per
  group (aggregated within the group), otherwise one shared branch.
- ``pixel_scale`` (Gaussian likelihood only) is the one std shared by every branch: a shared
  parameter like the encoder, aggregated over every participant.
- ``prior_means[g]`` is the mean of group g's prior N(mu_g, I) on z1 (a buffer, never trained
  or aggregated); ``learnable`` models have no fixed z1 prior.

``terms(x, group_ids, generator)`` returns named per-image terms; ``loss`` is the training
objective (Eq. 3 with the group prior for flat models, Eq. 10 for hierarchical ones) and
``neg_elbo`` the negative ELBO (Eq. 3 / Eq. 9) that evaluation reports.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from fissionvae.config import DecoderConfig, ModelConfig, RunConfig
from fissionvae.models.distributions import DiagGaussian, explicit_generator, unit_gaussian_log_prob
from fissionvae.models.groups import GroupNamed
from fissionvae.models.likelihoods import PixelScale, build_likelihood
from fissionvae.models.networks import GaussianMLP, build_image_decoder, build_image_encoder
from fissionvae.models.priors import prior_means
from fissionvae.models.protocol import GenerativeModel
from fissionvae.seeding import stream_seed

PATHWAYS = ("z2", "z1-z2-z1", "z1")
PATHWAY_HELP = {
    "z2": "z2 ~ N(0, I) -> p(z1|z2) -> p(x|z1) (hierarchical default, Table 7 row 3)",
    "z1-z2-z1": "z1 ~ p_g(z1) -> q(z2|z1) -> p(z1|z2) -> p(x|z1) (Table 7 row 1)",
    "z1": "z1 ~ p_g(z1) -> p(x|z1) (flat models; Table 7 row 2)",
}


def _sel(t: Tensor, idx: Tensor | None) -> Tensor:
    return t if idx is None else t[idx]


class Branch(nn.Module):
    """One decoder branch: p(x|z1), its pixel likelihood and (hierarchical) p(z1|z2)."""

    def __init__(
        self,
        cfg: DecoderConfig,
        model: ModelConfig,
        image_shape: tuple[int, int, int],
        pixel_scale: PixelScale | None = None,
    ):
        super().__init__()
        c, h, w = image_shape
        self.likelihood = build_likelihood(model.likelihood, c, model.dlml_components, pixel_scale)
        self.x = build_image_decoder(cfg, model.latent_dim, (self.likelihood.out_channels, h, w), model.norm)
        self.z1 = GaussianMLP(model.z2_dim, cfg.latent_hidden, model.latent_dim) if model.hierarchical else None

    def image_params(self, z1: Tensor) -> Tensor:
        return self.x(z1)

    def z1_given_z2(self, z2: Tensor) -> DiagGaussian:
        """p(z1|z2) of a hierarchical model's branch."""
        if self.z1 is None:
            raise ValueError("p(z1|z2) needs a hierarchical model")
        return self.z1(z2)


class FissionVAE(GroupNamed, nn.Module):
    kind = "vae"  # model.kind
    progress_terms: tuple[str, ...] = ("loss",)  # test terms the training progress bar shows
    prior_means: Tensor  # (groups, latent_dim) buffer

    def __init__(
        self,
        cfg: ModelConfig,
        group_names: list[str],
        image_shape: tuple[int, int, int] = (1, 28, 28),
        group_decoders: list[DecoderConfig | None] | None = None,
        prior_seed: int = 0,
    ):
        super().__init__()
        self.cfg = cfg
        self.group_names = list(group_names)
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        self.hierarchical = cfg.hierarchical
        self.encoder = nn.ModuleDict(
            {
                "x": build_image_encoder(
                    cfg.encoder_kind, self.image_shape, cfg.encoder_hidden, cfg.latent_dim, cfg.norm, cfg.encoder_head
                )
            }
        )
        if cfg.hierarchical:
            self.encoder["z1"] = GaussianMLP(cfg.latent_dim, cfg.z2_encoder_hidden, cfg.z2_dim)
        self.pixel_scale = PixelScale(cfg.gaussian_std, cfg.gaussian_std_init) if cfg.likelihood == "gaussian" else None
        overrides = group_decoders or [None] * len(group_names)
        branch_cfgs = [o or cfg.decoder for o in overrides] if cfg.decoder_branches else [cfg.decoder]
        self.branches = nn.ModuleList(Branch(bc, cfg, self.image_shape, self.pixel_scale) for bc in branch_cfgs)
        means = prior_means(cfg.prior, len(group_names), cfg.latent_dim, prior_seed)
        self.has_fixed_prior = means is not None
        self.register_buffer(
            "prior_means", means if means is not None else torch.zeros(len(group_names), cfg.latent_dim)
        )

    # ------------------------------------------------------------------ structure
    def branch_index(self, group: int) -> int:
        return group if len(self.branches) > 1 else 0

    def branch(self, index: int) -> Branch:
        """Decoder branch ``index`` (see :meth:`branch_index`)."""
        br = self.branches[index]
        assert isinstance(br, Branch)
        return br

    def owned_prefixes(self, groups: list[int]) -> tuple[str, ...]:
        """State-dict key prefixes a client holding ``groups`` trains and sends back."""
        branches = sorted({self.branch_index(g) for g in groups})
        return ("encoder.", "pixel_scale.", *(f"branches.{b}." for b in branches))

    def owned_keys(self, groups: list[int]) -> list[str]:
        prefixes = self.owned_prefixes(groups)
        return [k for k in self.state_dict() if k.startswith(prefixes)]

    def owned_parameters(self, groups: list[int]) -> list[nn.Parameter]:
        prefixes = self.owned_prefixes(groups)
        return [p for k, p in self.named_parameters() if k.startswith(prefixes)]

    # ------------------------------------------------------------------ local training (client_update's hooks)
    def local_optimizer(self, groups: list[int], lr: float, fused: bool) -> torch.optim.Optimizer:
        """The optimiser of one local update: Adam over the parameters a client of ``groups`` owns.

        A learned Gaussian std gets its own learning rate (``model.gaussian_std_lr``), so it reaches
        its optimum within a few rounds whatever the model's ``lr`` (docs/rgb.md).
        """
        params = self.owned_parameters(groups)
        scale = self.pixel_scale
        if scale is None or not isinstance(scale.log_std, nn.Parameter):
            return torch.optim.Adam(params, lr=lr, fused=fused or None)
        rest = [p for p in params if p is not scale.log_std]
        groups_: list[dict[str, Any]] = [{"params": rest}, {"params": [scale.log_std], "lr": self.cfg.gaussian_std_lr}]
        return torch.optim.Adam(groups_, lr=lr, fused=fused or None)

    def local_step(
        self, x: Tensor, group_ids: Tensor, optimizer: torch.optim.Optimizer, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """One minibatch step on the mean training loss; returns the per-image terms."""
        terms = self.terms(x, group_ids, generator)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].mean().backward()
        optimizer.step()
        return terms

    # ------------------------------------------------------------------ inference
    def encode(self, x: Tensor) -> DiagGaussian:
        """q(z1|x)."""
        return self.encoder["x"](x)

    def terms(self, x: Tensor, group_ids: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Named per-image loss terms in nats (each of shape (B,)), incl. ``loss`` and ``neg_elbo``."""
        generator = explicit_generator(generator)
        q1 = self.encode(x)
        z1 = q1.rsample(generator)
        out: dict[str, Tensor] = {}
        if self.has_fixed_prior:
            out["kl_prior"] = q1.kl_to_unit(self.prior_means[group_ids])
        if self.hierarchical:
            q2 = self.encoder["z1"](z1)
            z2 = q2.rsample(generator)
            out["kl_z2"] = q2.kl_to_unit()
        else:
            z2 = None
        out.update(self._per_branch(group_ids, lambda br, idx: self._branch_terms(br, x, q1, z1, z2, idx, generator)))
        return self._totals(out)

    def _branch_terms(self, br: Branch, x, q1, z1, z2, idx, generator) -> dict[str, Tensor]:
        terms = {"recon": br.likelihood.nll(br.image_params(_sel(z1, idx)), _sel(x, idx))}
        if z2 is not None:
            p1 = br.z1_given_z2(_sel(z2, idx))
            terms["kl_z1"] = DiagGaussian(_sel(q1.mean, idx), _sel(q1.logvar, idx)).kl(p1)
            terms["recon_z2"] = br.likelihood.nll(br.image_params(p1.rsample(generator)), _sel(x, idx))
        return terms

    def _per_branch(self, group_ids: Tensor, fn) -> dict[str, Tensor]:
        """Apply ``fn(branch, index)`` per branch present in the batch and reassemble per image."""
        branch_ids = group_ids if len(self.branches) > 1 else torch.zeros_like(group_ids)
        present = torch.unique(branch_ids).tolist()
        if len(present) == 1:
            return fn(self.branch(present[0]), None)
        out: dict[str, Tensor] = {}
        for b in present:
            idx = (branch_ids == b).nonzero(as_tuple=True)[0]
            for name, value in fn(self.branch(b), idx).items():
                if name not in out:
                    out[name] = value.new_zeros((group_ids.shape[0], *value.shape[1:]))
                out[name] = out[name].index_copy(0, idx, value)
        return out

    def _totals(self, t: dict[str, Tensor]) -> dict[str, Tensor]:
        beta = self.cfg.kl_weight
        if self.hierarchical:
            t["neg_elbo"] = t["recon"] + t["kl_z2"] + t["kl_z1"]
            t["loss"] = t["recon"] + t["recon_z2"] + beta * (t["kl_z2"] + t["kl_z1"] + t.get("kl_prior", 0.0))
        else:
            t["neg_elbo"] = t["recon"] + t["kl_prior"]
            t["loss"] = t["recon"] + beta * t["kl_prior"]
        return t

    def log_importance_weights(
        self, x: Tensor, group_ids: Tensor, k: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """(K, B) log p(x, z) - log q(z | x) for K posterior samples per image.

        Flat models: p(x, z1) = p_g(z1) p(x|z1) with the group prior. Hierarchical models: the
        generative model of Eq. 8, p(z2) p(z1|z2) p(x|z1), with q(z1|x) q(z2|z1); the group
        prior on z1 is a training regulariser there, not part of p(x). logsumexp over K minus
        log K is the importance-weighted bound on log p(x) (tighter than the ELBO as K grows).
        """
        generator = explicit_generator(generator)
        q1 = self.encode(x)
        rows = []
        for _ in range(k):
            z1 = q1.rsample(generator)
            if self.hierarchical:
                q2 = self.encoder["z1"](z1)
                z2 = q2.rsample(generator)
                log_prior = unit_gaussian_log_prob(z2) - q2.log_prob(z2)
                log_joint = self._per_branch(group_ids, partial(self._hier_log_lik, x=x, z1=z1, z2=z2))["lp"]
            else:
                log_prior = unit_gaussian_log_prob(z1, self.prior_means[group_ids])
                log_joint = -self._per_branch(group_ids, partial(self._flat_nll, x=x, z1=z1))["nll"]
            rows.append(log_joint + log_prior - q1.log_prob(z1))
        return torch.stack(rows)

    @staticmethod
    def _hier_log_lik(br: Branch, idx: Tensor | None, *, x: Tensor, z1: Tensor, z2: Tensor) -> dict[str, Tensor]:
        """{"lp": log p(z1|z2) + log p(x|z1)} for the images ``idx`` of one branch."""
        z1s = _sel(z1, idx)
        return {
            "lp": br.z1_given_z2(_sel(z2, idx)).log_prob(z1s) - br.likelihood.nll(br.image_params(z1s), _sel(x, idx))
        }

    @staticmethod
    def _flat_nll(br: Branch, idx: Tensor | None, *, x: Tensor, z1: Tensor) -> dict[str, Tensor]:
        """{"nll": -log p(x|z1)} for the images ``idx`` of one branch."""
        return {"nll": br.likelihood.nll(br.image_params(_sel(z1, idx)), _sel(x, idx))}

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def reconstruct(
        self, x: Tensor, group_ids: Tensor, pixels: str = "mean", generator: torch.Generator | None = None
    ) -> Tensor:
        """p(x|z1) at z1 = mean of q(z1|x), through each image's branch: its mean image (``pixels="mean"``),
        a pixel sample (``"sample"``, needs ``generator``) or what generation draws (``"generation"``)."""
        z1 = self.encode(x).mean
        out = self._per_branch(
            group_ids,
            lambda br, idx: {"img": br.likelihood.draw(br.image_params(_sel(z1, idx)), pixels, generator).flatten(1)},
        )
        return out["img"].view(x.shape[0], *self.image_shape)

    def default_pathway(self) -> str:
        return "z2" if self.hierarchical else "z1"

    @torch.no_grad()
    def sample(
        self,
        group: int | str,
        n: int,
        generator: torch.Generator | None = None,
        pathway: str | None = None,
        prior_group: int | str | None = None,
    ) -> Tensor:
        """Generate ``n`` images for ``group``: the pixel likelihood's ``generation`` draw (its mean for
        Bernoulli and Gaussian, a mixture sample for DLML, which needs ``generator`` to be seeded).

        ``pathway`` is one of :data:`PATHWAYS`; ``prior_group`` draws z1 from another group's
        prior while decoding with ``group``'s branch (the prior-swap experiment, Fig. 10).
        """
        g = self.group_index(group)
        generator = explicit_generator(generator)
        pathway = pathway or self.default_pathway()
        self._check_pathway(pathway)
        br = self.branch(self.branch_index(g))
        if pathway == "z2":
            z2 = torch.randn(n, self.cfg.z2_dim, generator=generator).to(self.prior_means.device)
            z1 = br.z1_given_z2(z2).rsample(generator)
        else:
            mu = self.prior_means[self.group_index(prior_group if prior_group is not None else g)]
            z1 = mu + torch.randn(n, self.cfg.latent_dim, generator=generator).to(mu.device)
            if pathway == "z1-z2-z1":
                z2 = self.encoder["z1"](z1).rsample(generator)
                z1 = br.z1_given_z2(z2).rsample(generator)
        return br.likelihood.draw(br.image_params(z1), "generation", generator)

    def _check_pathway(self, pathway: str) -> None:
        if pathway not in PATHWAYS:
            raise ValueError(f"unknown pathway {pathway!r}; choose one of {list(PATHWAYS)}")
        if pathway != "z1" and not self.hierarchical:
            raise ValueError(f"pathway {pathway!r} needs a hierarchical model; flat models sample with 'z1'")
        if pathway != "z2" and not self.has_fixed_prior:
            raise ValueError(
                f"pathway {pathway!r} samples z1 from a group prior, but prior 'learnable' defines none; use 'z2'"
            )


def build_model(cfg: RunConfig, image_shape: tuple[int, ...] | list[int] = (1, 28, 28)) -> GenerativeModel:
    """The run's model, initialised from the run seed's ``init`` stream (same weights everywhere).

    Every model kind is built here (``model.kind: dcgan`` gives :class:`~fissionvae.models.gan.DCGAN`),
    so engines and commands that build "the run's model" need not know the kinds.
    """
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (channels, height, width), got {tuple(image_shape)}")
    c, h, w = (int(v) for v in image_shape)
    if cfg.model.kind == "dcgan":
        from fissionvae.models.gan import build_gan

        return build_gan(cfg, (c, h, w))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        return FissionVAE(
            cfg.model,
            cfg.group_names,
            (c, h, w),
            group_decoders=[g.decoder for g in cfg.data.groups],
            prior_seed=stream_seed(cfg.seed, "prior"),
        )
