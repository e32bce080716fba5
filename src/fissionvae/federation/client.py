"""The client update: local training of the parameters a client owns.

A pure function of (global weights it was sent, its data, the round's training spec): the
same code runs in the in-process engine, in worker processes and in a Flower ClientApp.
The optimiser (Adam) is created fresh at the start of every local update, so clients keep
no state between rounds (a client that sits out rounds, or restarts, behaves the same);
this is our choice, the paper does not say. Local shuffling and the VAE's noise come from
the generator of stream (seed, "client", round, client_id).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fissionvae.data.federated import ClientData
from fissionvae.models.vae import FissionVAE
from fissionvae.seeding import torch_generator


@dataclass(frozen=True)
class LocalTrainSpec:
    """What the server asks of every client in one round."""

    seed: int
    round: int  # 0-based round index
    epochs: int
    batch_size: int
    lr: float
    fused_adam: bool = True


@dataclass
class ClientResult:
    """A client's reply: the weights it owns after training, its sample count, metrics."""

    client_id: int
    groups: list[int]
    num_samples: int
    weights: dict[str, Tensor]
    metrics: dict[str, float] = field(default_factory=dict)


def load_owned(model: FissionVAE, weights: Mapping[str, Tensor], groups: list[int]) -> list[str]:
    """Load exactly the keys a client of ``groups`` owns; any missing or extra key is an error."""
    owned = model.owned_keys(groups)
    missing = sorted(set(owned) - set(weights))
    extra = sorted(set(weights) - set(owned))
    if missing or extra:
        raise ValueError(f"client weights do not match groups {groups}: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(dict(weights), strict=False)
    return owned


def client_update(model: FissionVAE, weights: Mapping[str, Tensor], data: ClientData, spec: LocalTrainSpec) -> ClientResult:
    """Train ``model`` (a reusable template) from ``weights`` on ``data``; return owned weights.

    Parameters
    ----------
    model:
        Any instance built from the run config; its owned parameters are overwritten.
    weights:
        The global values of exactly the keys this client owns (encoder + its branch).
    data:
        The client's images, labels and group ids.
    spec:
        Round index, local epochs, batch size, learning rate and seed.
    """
    groups = data.groups
    owned = load_owned(model, weights, groups)
    optimizer = torch.optim.Adam(model.owned_parameters(groups), lr=spec.lr, fused=spec.fused_adam or None)
    generator = torch_generator(spec.seed, "client", spec.round, data.client_id)
    model.train()
    start = time.perf_counter()
    sums, steps = _train_epochs(model, optimizer, data, spec, generator)
    seconds = time.perf_counter() - start
    seen = spec.epochs * data.num_samples
    metrics = {name: total / seen for name, total in sums.items()}
    metrics.update(seconds=seconds, samples_per_s=seen / max(seconds, 1e-9), steps=steps)
    state = model.state_dict()
    return ClientResult(data.client_id, groups, data.num_samples, {k: state[k].detach().clone() for k in owned}, metrics)


def _train_epochs(model, optimizer, data: ClientData, spec: LocalTrainSpec, generator) -> tuple[dict[str, float], int]:
    """Minibatch Adam over ``spec.epochs`` shuffled passes; returns summed per-image terms."""
    names: list[str] = []
    total: Tensor | None = None
    steps = 0
    for _ in range(spec.epochs):
        order = torch.randperm(data.num_samples, generator=generator)
        for batch in order.split(spec.batch_size):
            terms = model.terms(data.images[batch], data.group_ids[batch], generator)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].mean().backward()
            optimizer.step()
            steps += 1
            step_sums = torch.stack([v.detach() for v in terms.values()]).sum(1)  # one op for all terms
            total = step_sums if total is None else total + step_sums
            names = names or list(terms)
    return ({n: float(v) for n, v in zip(names, total.tolist())} if total is not None else {}), steps
