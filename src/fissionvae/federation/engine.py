"""The round loop, shared by every engine, and the in-process engine (the embedded default).

The loop knows nothing of the model variant (VAE or the FedGAN baseline's DCGAN: the model
object carries the hooks that differ, see client.py) or of where clients run: each round it samples
the participants, hands them to a *dispatcher* (which returns their replies), rejects invalid
replies, aggregates with :func:`aggregate`, evaluates on a fixed test subset, appends metrics
and checkpoints the server state. :class:`InProcessDispatcher` runs :func:`client_update` for
each participant in this process; other engines (worker processes, Flower) supply their own
dispatcher and reuse everything else. Centralised training is the same loop with one client
that holds all data (all groups), participation 1 and one local epoch per round.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fissionvae.artifacts import write_run_artifacts
from fissionvae.config import RunConfig
from fissionvae.data.federated import ClientData, GroupData, build_clients, client_groups, load_groups
from fissionvae.evaluation.elbo import mean_terms
from fissionvae.federation.aggregation import InvalidUpdate, aggregate, check_update
from fissionvae.federation.client import ClientResult, LocalTrainSpec, client_update, local_images
from fissionvae.federation.sampling import sample_participants
from fissionvae.federation.state import ServerState
from fissionvae.federation.workers import start_pool
from fissionvae.models.protocol import GenerativeModel
from fissionvae.models.vae import build_model
from fissionvae.runs import RunDir
from fissionvae.seeding import torch_generator

# (global weights, round index, participant ids, spec) -> replies of the clients that answered.
# When spec.keep_optimizer is set the dispatcher is also given ``client_states=`` (client id ->
# that client's Adam state from its previous update, absent for a first update).
Dispatcher = Callable[..., list[ClientResult]]


@dataclass
class Federation:
    """The server's view of a run: groups (test sets), each client's groups, the model template.

    ``clients`` (the training data) is only loaded for in-process training; a Flower server
    builds a Federation without it.
    """

    cfg: RunConfig
    groups: list[GroupData]
    model: GenerativeModel
    client_groups: list[list[int]]
    clients: list[ClientData] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: RunConfig, data_dir: str | Path | None = None, with_clients: bool = True) -> Federation:
        groups = load_groups(cfg, data_dir)
        image_shape = tuple(groups[0].train_images.shape[1:])
        device = torch.device(cfg.train.device)
        clients = [_on(c, device) for c in build_clients(cfg, groups)] if with_clients else []
        return cls(cfg, groups, build_model(cfg, image_shape).to(device), client_groups(cfg), clients)

    @property
    def participation(self) -> float:
        return 1.0 if self.cfg.mode == "centralized" else self.cfg.federation.participation

    def owned_keys(self, client_id: int) -> list[str]:
        return self.model.owned_keys(self.client_groups[client_id])

    def round_spec(self, round_index: int) -> LocalTrainSpec:
        t = self.cfg.train
        centralized = self.cfg.mode == "centralized"
        epochs = 1 if centralized else t.local_epochs
        # centralised training is one uninterrupted optimiser run, so its Adam state is always kept
        keep = centralized or self.cfg.federation.client_optimizer == "keep"
        steps = None if centralized else t.local_steps
        return LocalTrainSpec(self.cfg.seed, round_index, epochs, t.batch_size, t.lr, t.fused_adam, keep, steps)

    def initial_state(self) -> ServerState:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        shape = list(self.groups[0].train_images.shape[1:])
        return ServerState(round=0, weights=weights, config=self.cfg.to_dict(), extra={"image_shape": shape})


def _on(client: ClientData, device: torch.device) -> ClientData:
    """The client's tensors on the training device (a no-op on the CPU)."""
    return dataclasses.replace(client, images=client.images.to(device), group_ids=client.group_ids.to(device))


class InProcessDispatcher:
    """Run each participant's :func:`client_update` in this process, one after another."""

    def __init__(self, fed: Federation, progress: bool = False):
        self.fed = fed
        self.progress = progress

    def __call__(
        self,
        weights: dict,
        round_index: int,
        participants: list[int],
        spec: LocalTrainSpec,
        client_states: dict | None = None,
    ) -> list[ClientResult]:
        results = []
        states = client_states or {}
        for cid in tqdm(participants, desc=f"round {round_index + 1} clients", leave=False, disable=not self.progress):
            owned = self.fed.owned_keys(cid)
            sent = {k: weights[k] for k in owned}
            results.append(client_update(self.fed.model, sent, self.fed.clients[cid], spec, states.get(cid)))
        return results


@dataclass
class RoundOutcome:
    weights: dict
    results: list[ClientResult]
    participants: list[int]
    rejected: list[dict]
    client_states: dict = field(default_factory=dict)  # new optimiser states of accepted clients (keep mode)


def run_round(
    fed: Federation, weights: dict, round_index: int, dispatch: Dispatcher, client_states: dict | None = None
) -> RoundOutcome:
    """One round: participants, dispatch, reply checks, aggregation.

    ``client_states`` (keep mode) maps client ids to their optimiser states; a rejected reply's
    new state is dropped, so that client continues from its last accepted one.
    """
    chosen = sample_participants(fed.cfg.seed, round_index, len(fed.client_groups), fed.participation)
    spec = fed.round_spec(round_index)
    extra = {"client_states": client_states or {}} if spec.keep_optimizer else {}
    replies = dispatch(weights, round_index, chosen, spec, **extra) if chosen else []
    valid, rejected = [], []
    for reply in replies:
        try:
            if reply.client_id not in chosen:
                raise InvalidUpdate(f"client {reply.client_id} was not asked to train in this round")
            check_update(weights, fed.owned_keys(reply.client_id), reply)
            valid.append(reply)
        except InvalidUpdate as exc:
            rejected.append({"client": reply.client_id, "reason": str(exc)})
    states = {r.client_id: r.optimizer_state for r in valid if r.optimizer_state is not None}
    return RoundOutcome(aggregate(weights, valid), valid, chosen, rejected, states)


def test_metrics(fed: Federation, round_index: int) -> dict[str, float]:
    """Mean loss terms on the first ``eval.test_per_group`` test images of each group."""
    out: dict[str, float] = {}
    totals: dict[str, float] = {}
    n_total = 0
    generator = torch_generator(fed.cfg.seed, "eval", round_index)
    for gi, g in enumerate(fed.groups):
        images = g.test_images[: fed.cfg.eval.test_per_group]
        terms = mean_terms(fed.model, images, torch.full((len(images),), gi, dtype=torch.int64), generator)
        for name, value in terms.items():
            out[f"test/{g.name}/{name}"] = value
            totals[name] = totals.get(name, 0.0) + value * len(images)
        n_total += len(images)
    out.update({f"test/{name}": total / n_total for name, total in totals.items()})
    return out


TIMING_KEYS = ("seconds", "samples_per_s", "steps")


def round_records(fed: Federation, round_index: int, outcome: RoundOutcome, seconds: float, test: dict) -> list[dict]:
    """metrics.jsonl lines: one per accepted client reply, then the round summary."""
    names = fed.cfg.group_names
    rnd = round_index + 1
    results = outcome.results
    records = [
        {
            "type": "client",
            "round": rnd,
            "client": r.client_id,
            "groups": [names[g] for g in r.groups],
            "num_samples": r.num_samples,
        }
        | {(k if k in TIMING_KEYS else f"train/{k}"): v for k, v in r.metrics.items()}
        for r in results
    ]
    spec = fed.round_spec(round_index)
    summary = {
        "type": "round",
        "round": rnd,
        "participants": len(outcome.participants),
        "clients": [r.client_id for r in results],
        "missing": sorted(
            set(outcome.participants) - {r.client_id for r in results} - {x["client"] for x in outcome.rejected}
        ),
        "rejected": outcome.rejected,
        "empty": not results,
        "seconds": seconds,
        "samples_per_s": sum(local_images(r.num_samples, spec) for r in results) / seconds if seconds > 0 else 0.0,
    }
    weight = sum(r.num_samples for r in results)
    for key in results[0].metrics if results else []:
        if key not in TIMING_KEYS:
            summary[f"train/{key}"] = sum(r.metrics[key] * r.num_samples for r in results) / weight
    return records + [summary | test]


def train(
    cfg: RunConfig,
    run: RunDir,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
    federation: Federation | None = None,
    dispatch: Dispatcher | None = None,
) -> ServerState:
    """Train (or continue) the run in ``run`` up to ``cfg.effective_rounds``.

    Resumes from ``run``'s checkpoint when there is one. ``max_rounds`` stops after that many
    rounds in this call (the run stays resumable). ``dispatch`` runs the clients (default:
    in this process, or in a pool of worker processes as ``federation.workers`` says; the pool
    is closed when this returns or raises). Returns the final server state.
    """
    torch.set_num_threads(cfg.federation.threads)
    fed = federation or Federation.from_config(cfg, data_dir, with_clients=dispatch is None)
    rounds = cfg.effective_rounds if max_rounds is None else min(max_rounds, cfg.effective_rounds)
    pool = start_pool(fed, rounds, progress) if dispatch is None else None
    try:
        return _train_rounds(
            cfg, run, fed, dispatch or pool or InProcessDispatcher(fed, progress), max_rounds, progress
        )
    finally:
        if pool is not None:
            pool.close()


def _train_rounds(
    cfg: RunConfig, run: RunDir, fed: Federation, dispatch: Dispatcher, max_rounds: int | None, progress: bool
) -> ServerState:
    """The round loop of :func:`train`."""
    state = run.load_state() if run.has_checkpoint() else fed.initial_state()
    run.truncate_metrics(state.round)
    fed.model.load_state_dict(state.weights)
    planned = cfg.effective_rounds
    stop = planned if max_rounds is None else min(planned, state.round + max_rounds)
    run.write_status(state, planned, running=True)
    bar = tqdm(
        range(state.round, stop), initial=state.round, total=planned, desc=cfg.name, unit="round", disable=not progress
    )
    for r in bar:
        start = time.perf_counter()
        outcome = run_round(fed, state.weights, r, dispatch, state.client_states)
        seconds = time.perf_counter() - start
        fed.model.load_state_dict(outcome.weights)
        records = round_records(fed, r, outcome, seconds, test_metrics(fed, r))
        run.append_metrics(records)
        state = dataclasses.replace(
            state,
            round=r + 1,
            weights=outcome.weights,
            wall_seconds=state.wall_seconds + seconds,
            client_states=state.client_states | outcome.client_states,
        )
        run.save_state(state)
        run.write_status(state, planned, running=True)
        bar.set_postfix(
            clients=len(outcome.results),
            **{f"test_{t}": f"{records[-1][f'test/{t}']:.1f}" for t in fed.model.progress_terms},
        )
    run.write_status(state, planned, running=False)
    write_run_artifacts(fed.model.cpu(), fed.groups, run, cfg)
    return state
