"""The client update: local training of the parameters a client owns.

A pure function of (global weights it was sent, its data, the round's training spec): the
same code runs in the in-process engine, in worker processes and in a Flower ClientApp.
By default the optimiser (Adam) is created fresh at the start of every local update, so clients
keep no state between rounds (a client that sits out rounds, or restarts, behaves the same);
this is our choice, the paper does not say. With ``optimizer_state`` given (config
``federation.client_optimizer: keep``) Adam continues from the client's previous moments and
the reply carries the new state back to whoever keeps it for the client. Local shuffling and the VAE's noise come from
the generator of stream (seed, "client", round, client_id). With record-level privacy
(``spec.dp_clip`` set) the local update is DP-SGD (:func:`fissionvae.privacy.record.dp_train`).

Every model kind trains through this one function: the model supplies two hooks,
``local_optimizer(groups, lr, fused)`` (the VAE: one Adam over its owned parameters; the DCGAN:
one Adam each for generator and discriminator, behind one state dict) and
``local_step(images, group_ids, optimizer, generator)`` (one minibatch update returning named
per-image terms for the client's metrics). Engines (in-process, worker processes, Flower) call
:func:`client_update` and need not know which kind they train.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fissionvae.data.federated import ClientData
from fissionvae.models.protocol import GenerativeModel, LocalOptimizer
from fissionvae.privacy.record import dp_train
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
    keep_optimizer: bool = False  # return Adam's state so the client can continue from it next time
    steps: int | None = None  # if set: exactly this many minibatch steps instead of ``epochs`` passes
    # record-level DP-SGD (privacy/record.py) when dp_clip is set: per-sample clip norm, noise multiplier
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_grad_sample_mode: str = "ghost"  # ghost, hooks or functorch


@dataclass
class ClientResult:
    """A client's reply: the weights it owns after training, its sample count, metrics."""

    client_id: int
    groups: list[int]
    num_samples: int
    weights: dict[str, Tensor]
    metrics: dict[str, float] = field(default_factory=dict)
    optimizer_state: dict | None = None  # only with spec.keep_optimizer: stays with the client, never aggregated


def load_owned(model: GenerativeModel, weights: Mapping[str, Tensor], groups: list[int]) -> list[str]:
    """Load exactly the keys a client of ``groups`` owns; any missing or extra key is an error."""
    owned = model.owned_keys(groups)
    missing = sorted(set(owned) - set(weights))
    extra = sorted(set(weights) - set(owned))
    if missing or extra:
        raise ValueError(f"client weights do not match groups {groups}: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(dict(weights), strict=False)
    return owned


def client_update(
    model: GenerativeModel,
    weights: Mapping[str, Tensor],
    data: ClientData,
    spec: LocalTrainSpec,
    optimizer_state: dict | None = None,
) -> ClientResult:
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
    optimizer_state:
        Adam's state from this client's previous update (``spec.keep_optimizer``); None starts
        a fresh Adam.
    """
    groups = data.groups
    owned = load_owned(model, weights, groups)
    optimizer = model.local_optimizer(groups, spec.lr, spec.fused_adam)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    generator = torch_generator(spec.seed, "client", spec.round, data.client_id)
    model.train()
    start = time.perf_counter()
    if spec.dp_clip is None:
        sums, steps = _train_epochs(model, optimizer, data, spec, generator)
        seen = local_images(data.num_samples, spec)
    else:
        sums, steps, seen = dp_train(model, optimizer, data, spec, generator)
    seconds = time.perf_counter() - start
    metrics = {name: total / max(seen, 1) for name, total in sums.items()}
    metrics.update(seconds=seconds, samples_per_s=seen / max(seconds, 1e-9), steps=steps)
    state = model.state_dict()
    kept = (
        copy.deepcopy(optimizer.state_dict()) if spec.keep_optimizer else None
    )  # shares no storage with the live Adam
    weights_out = {k: state[k].detach().to("cpu", copy=True) for k in owned}  # aggregation runs on the CPU
    return ClientResult(data.client_id, groups, data.num_samples, weights_out, metrics, kept)


def minibatches(num_samples: int, spec: LocalTrainSpec, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches of one local update: ``spec.epochs`` shuffled passes, or with ``spec.steps``
    exactly that many batches over as many reshuffled passes as needed (the last may be cut short)."""
    steps = 0
    for _ in range(spec.epochs) if spec.steps is None else itertools.count():
        if spec.steps is not None and steps == spec.steps:
            return
        for batch in torch.randperm(num_samples, generator=generator).split(spec.batch_size):
            if spec.steps is not None and steps == spec.steps:
                return
            steps += 1
            yield batch


def local_images(num_samples: int, spec: LocalTrainSpec) -> int:
    """How many images (with repeats) one local update of :func:`minibatches` trains on."""
    if spec.steps is None:
        return spec.epochs * num_samples
    passes, rest = divmod(spec.steps, math.ceil(num_samples / spec.batch_size))
    return passes * num_samples + rest * spec.batch_size


def _train_epochs(
    model: GenerativeModel,
    optimizer: LocalOptimizer,
    data: ClientData,
    spec: LocalTrainSpec,
    generator: torch.Generator,
) -> tuple[dict[str, float], int]:
    """``model.local_step`` over :func:`minibatches`; returns summed per-image terms and the step count."""
    names: list[str] = []
    total: Tensor | None = None
    steps = 0
    for batch in minibatches(data.num_samples, spec, generator):
        terms = model.local_step(data.images[batch], data.group_ids[batch], optimizer, generator)
        steps += 1
        step_sums = torch.stack([v.detach() for v in terms.values()]).sum(1)  # one op for all terms
        total = step_sums if total is None else total + step_sums
        names = names or list(terms)
    return ({n: float(v) for n, v in zip(names, total.tolist(), strict=True)} if total is not None else {}), steps
