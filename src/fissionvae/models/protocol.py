"""The model contract: what the engines, the client update, evaluation and the commands rely on.

Every model kind (``FissionVAE`` for the VAE variants, ``DCGAN`` for the FedGAN baseline) satisfies
:class:`GenerativeModel`; code that trains, aggregates, samples or evaluates is typed against it and
never against a concrete class. Models with an encoder and a likelihood (the VAEs) also satisfy
:class:`LatentVariableModel`; code that needs reconstructions, latent means or likelihood bounds
asks ``isinstance(model, LatentVariableModel)`` instead of comparing ``kind`` strings.

``tests/test_model_contract.py`` runs one shared suite over every model class.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from fissionvae.models.distributions import DiagGaussian


class LocalOptimizer(Protocol):
    """What ``client_update`` does with a model's optimiser: save and restore its state."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> None: ...


@runtime_checkable
class GenerativeModel(Protocol):
    """A federated generative model over named client groups.

    Structure: ``owned_keys(groups)`` are the state-dict keys a client holding ``groups`` trains
    and sends back (the union over all groups is the whole state dict). Training:
    ``local_optimizer`` and ``local_step`` are the two hooks of the one client update. Held-out
    terms: ``terms`` gives named per-image terms (``progress_terms`` are the ones a progress bar
    shows). Generation: ``sample`` gives ``n`` images in [0, 1] of shape ``(n, *image_shape)``.
    """

    kind: str  # the config's model.kind
    progress_terms: tuple[str, ...]
    group_names: list[str]
    image_shape: tuple[int, int, int]  # (channels, height, width)

    @property
    def num_groups(self) -> int: ...

    def group_index(self, group: int | str) -> int: ...

    def owned_keys(self, groups: list[int]) -> list[str]: ...

    def local_optimizer(self, groups: list[int], lr: float, fused: bool) -> LocalOptimizer: ...

    def local_step(
        self, x: Tensor, group_ids: Tensor, optimizer: Any, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]: ...

    def terms(self, x: Tensor, group_ids: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]: ...

    def default_pathway(self) -> str: ...

    def sample(
        self,
        group: int | str,
        n: int,
        generator: torch.Generator | None = None,
        pathway: str | None = None,
        prior_group: int | str | None = None,
    ) -> Tensor: ...

    # the torch.nn.Module surface the engines use
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def cpu(self) -> Any: ...

    @property
    def training(self) -> bool: ...


@runtime_checkable
class LatentVariableModel(GenerativeModel, Protocol):
    """A generative model with an encoder q(z|x) and a likelihood p(x|z): the VAEs.

    Adds reconstructions, latent means (t-SNE), the ELBO terms ``neg_elbo`` in ``terms`` and
    importance-weighted likelihood bounds, and group priors that can be swapped between groups.
    """

    has_fixed_prior: bool  # every group has a fixed z1 prior N(mu_g, I) (sampling pathways 'z1', 'z1-z2-z1')

    def encode(self, x: Tensor) -> DiagGaussian: ...

    def reconstruct(self, x: Tensor, group_ids: Tensor) -> Tensor: ...

    def log_importance_weights(
        self, x: Tensor, group_ids: Tensor, k: int, generator: torch.Generator | None = None
    ) -> Tensor: ...


def check_sampling(model: GenerativeModel, pathway: str | None, prior_group: int | str | None) -> None:
    """Refuse a pathway / prior-group combination the model cannot honour (a ValueError naming it).

    ``prior_group`` draws z1 from another group's prior; the hierarchical default pathway 'z2'
    draws z1 from no group prior at all, so asking for both would silently ignore ``prior_group``.
    """
    if prior_group is None:
        return
    if not isinstance(model, LatentVariableModel):
        raise ValueError(f"a {model.kind} model has no group priors: --prior-group does not apply")
    chosen = pathway or model.default_pathway()
    if chosen == "z2" or not model.has_fixed_prior:
        raise ValueError(
            f"--prior-group needs fixed group priors and a pathway that samples z1 from them ('z1-z2-z1' or "
            f"'z1'); this model's pathway is {chosen!r}"
            + ("" if model.has_fixed_prior else " and it has no fixed group priors")
        )
    model.group_index(prior_group)
