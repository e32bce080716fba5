"""The in-process federation engine (the embedded default).

The round loop knows nothing of the model variant: it samples the round's participants,
sends each the weights it owns, runs :func:`client_update` for each, aggregates with
:func:`aggregate`, evaluates on a fixed test subset, appends metrics, and checkpoints the
server state. Centralised training is the same loop with one client that holds all data
(all groups), participation 1 and one local epoch per round (one round = one epoch).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fissionvae.artifacts import write_run_artifacts
from fissionvae.config import RunConfig
from fissionvae.data.federated import ClientData, GroupData, build_clients, load_groups
from fissionvae.evaluation.elbo import mean_terms
from fissionvae.federation.aggregation import aggregate, check_update
from fissionvae.federation.client import ClientResult, LocalTrainSpec, client_update
from fissionvae.federation.sampling import sample_participants
from fissionvae.models.vae import FissionVAE, build_model
from fissionvae.runs import RunDir
from fissionvae.seeding import torch_generator
from fissionvae.federation.state import ServerState


@dataclass
class Federation:
    """The data side of a run: groups (with test sets) and clients, plus the model template."""

    cfg: RunConfig
    groups: list[GroupData]
    clients: list[ClientData]
    model: FissionVAE

    @classmethod
    def from_config(cls, cfg: RunConfig, data_dir: str | Path | None = None) -> Federation:
        groups = load_groups(cfg, data_dir)
        image_shape = tuple(groups[0].train_images.shape[1:])
        return cls(cfg, groups, build_clients(cfg, groups), build_model(cfg, image_shape))

    @property
    def participation(self) -> float:
        return 1.0 if self.cfg.mode == "centralized" else self.cfg.federation.participation

    def round_spec(self, round_index: int) -> LocalTrainSpec:
        t = self.cfg.train
        epochs = 1 if self.cfg.mode == "centralized" else t.local_epochs
        return LocalTrainSpec(self.cfg.seed, round_index, epochs, t.batch_size, t.lr, t.fused_adam)

    def initial_state(self) -> ServerState:
        weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        shape = list(self.groups[0].train_images.shape[1:])
        return ServerState(round=0, weights=weights, config=self.cfg.to_dict(), extra={"image_shape": shape})


def run_round(fed: Federation, weights: dict, round_index: int, progress: bool = False) -> tuple[dict, list[ClientResult]]:
    """One federated round: participants, local updates, aggregation. Returns (new weights, replies)."""
    chosen = sample_participants(fed.cfg.seed, round_index, len(fed.clients), fed.participation)
    spec = fed.round_spec(round_index)
    results = []
    for cid in tqdm(chosen, desc=f"round {round_index + 1} clients", leave=False, disable=not progress):
        client = fed.clients[cid]
        owned = fed.model.owned_keys(client.groups)
        result = client_update(fed.model, {k: weights[k] for k in owned}, client, spec)
        check_update(weights, owned, result)
        results.append(result)
    return aggregate(weights, results), results


def test_metrics(fed: Federation, round_index: int) -> dict[str, float]:
    """Mean loss terms on the first ``eval.test_per_group`` test images of each group."""
    out: dict[str, float] = {}
    n_total = 0
    totals: dict[str, float] = {}
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


def round_records(fed: Federation, round_index: int, results: list[ClientResult], seconds: float, test: dict) -> list[dict]:
    """metrics.jsonl lines: one per client reply, then the round summary."""
    names = fed.cfg.group_names
    rnd = round_index + 1
    records = [
        {"type": "client", "round": rnd, "client": r.client_id, "groups": [names[g] for g in r.groups], "num_samples": r.num_samples}
        | {(f"train/{k}" if k not in ("seconds", "samples_per_s", "steps") else k): v for k, v in r.metrics.items()}
        for r in results
    ]
    summary = {"type": "round", "round": rnd, "participants": len(results), "clients": [r.client_id for r in results], "empty": not results, "seconds": seconds}
    samples = sum(r.num_samples * fed.round_spec(round_index).epochs for r in results)
    summary["samples_per_s"] = samples / seconds if seconds > 0 else 0.0
    if results:
        weight = sum(r.num_samples for r in results)
        for key in results[0].metrics:
            if key not in ("seconds", "samples_per_s", "steps"):
                summary[f"train/{key}"] = sum(r.metrics[key] * r.num_samples for r in results) / weight
    return records + [summary | test]


def train(
    cfg: RunConfig,
    run: RunDir,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
    federation: Federation | None = None,
) -> ServerState:
    """Train (or continue) the run in ``run`` up to ``cfg.effective_rounds``.

    Resumes from ``run``'s checkpoint when there is one. ``max_rounds`` stops after that many
    rounds in this call (the run stays resumable). Returns the final server state.
    """
    torch.set_num_threads(cfg.federation.threads)
    fed = federation or Federation.from_config(cfg, data_dir)
    state = run.load_state() if run.has_checkpoint() else fed.initial_state()
    run.truncate_metrics(state.round)
    fed.model.load_state_dict(state.weights)
    planned = cfg.effective_rounds
    stop = planned if max_rounds is None else min(planned, state.round + max_rounds)
    run.write_status(state, planned, running=True)
    bar = tqdm(range(state.round, stop), initial=state.round, total=planned, desc=cfg.name, unit="round", disable=not progress)
    for r in bar:
        start = time.perf_counter()
        weights, results = run_round(fed, state.weights, r, progress)
        fed.model.load_state_dict(weights)
        seconds = time.perf_counter() - start
        records = round_records(fed, r, results, seconds, test_metrics(fed, r))
        run.append_metrics(records)
        state = dataclasses.replace(state, round=r + 1, weights=weights, wall_seconds=state.wall_seconds + seconds)
        run.save_state(state)
        bar.set_postfix(participants=len(results), test_loss=f"{records[-1]['test/loss']:.1f}")
    run.write_status(state, planned, running=False)
    write_run_artifacts(fed.model, fed.groups, run, cfg)
    return state
