"""The server's view of a run: groups (test sets), each client's groups and partition size, the model template.

Every engine builds one :class:`Federation` from the run config; it holds what the server knows
about its clients without asking them (their groups, owned keys and sample counts), which is what
their replies are checked against (:mod:`.replies`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from fissionvae.config import RunConfig
from fissionvae.data.federated import (
    ClientData,
    GroupData,
    build_clients,
    client_groups,
    load_groups,
    partition_sizes,
)
from fissionvae.federation.aggregation import AggregationRule
from fissionvae.federation.client import LocalTrainSpec
from fissionvae.federation.replies import Expected
from fissionvae.federation.state import ServerState
from fissionvae.models.protocol import GenerativeModel
from fissionvae.models.vae import build_model
from fissionvae.privacy.plan import PrivacyPlan


@dataclass
class Federation:
    """The server's view of a run: groups (test sets), each client's groups, the model template.

    ``clients`` (the training data) is only loaded for in-process training; a Flower server
    builds a Federation without it. ``client_sizes`` (each partition's size) is always known.
    """

    cfg: RunConfig
    groups: list[GroupData]
    model: GenerativeModel
    client_groups: list[list[int]]
    clients: list[ClientData] = field(default_factory=list)
    client_sizes: list[int] = field(default_factory=list)

    @classmethod
    def from_config(
        cls, cfg: RunConfig, data_dir: str | Path | None = None, with_clients: bool = True, *, progress: bool = True
    ) -> Federation:
        """Load the data and build the model; ``progress``: show the download bar of a missing dataset file."""
        groups = load_groups(cfg, data_dir, progress=progress)
        image_shape = tuple(groups[0].train_images.shape[1:])
        device = torch.device(cfg.train.device)
        clients = [_on(c, device) for c in build_clients(cfg, groups)] if with_clients else []
        model = build_model(cfg, image_shape).to(device)
        return cls(cfg, groups, model, client_groups(cfg), clients, partition_sizes(cfg, groups))

    @property
    def participation(self) -> float:
        return 1.0 if self.cfg.mode == "centralized" else self.cfg.federation.participation

    @cached_property
    def privacy(self) -> PrivacyPlan | None:
        """The run's privacy plan (None without a ``privacy`` section); from config and data sizes only."""
        return PrivacyPlan.build(self.cfg, self.client_sizes)

    @property
    def rule(self) -> AggregationRule:
        return AggregationRule.from_config(self.cfg.federation)

    def owned_keys(self, client_id: int) -> list[str]:
        return self.model.owned_keys(self.client_groups[client_id])

    def expected(self, client_id: int) -> Expected:
        """What a reply from ``client_id`` must match: owned keys, partition size, groups."""
        return Expected(self.owned_keys(client_id), self.client_sizes[client_id], self.client_groups[client_id])

    def round_spec(self, round_index: int) -> LocalTrainSpec:
        t = self.cfg.train
        centralized = self.cfg.mode == "centralized"
        epochs = 1 if centralized else t.local_epochs
        # centralised training is one uninterrupted optimiser run, so its Adam state is always kept
        keep = centralized or self.cfg.federation.client_optimizer == "keep"
        steps = None if centralized else t.local_steps
        dp = self.privacy.spec_fields() if self.privacy is not None else {}
        return LocalTrainSpec(self.cfg.seed, round_index, epochs, t.batch_size, t.lr, t.fused_adam, keep, steps, **dp)

    def initial_state(self) -> ServerState:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        shape = list(self.groups[0].train_images.shape[1:])
        return ServerState(round=0, weights=weights, config=self.cfg.to_dict(), extra={"image_shape": shape})


def _on(client: ClientData, device: torch.device) -> ClientData:
    """The client's tensors on the training device (a no-op on the CPU)."""
    return dataclasses.replace(client, images=client.images.to(device), group_ids=client.group_ids.to(device))
