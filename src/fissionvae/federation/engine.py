"""The round loop, shared by every engine, and the in-process engine (the embedded default).

The loop knows nothing of the model variant (VAE or the FedGAN baseline's DCGAN: the model
object carries the hooks that differ, see client.py) or of where clients run: each round it samples
the participants, hands them to a *dispatcher* (which returns their replies), rejects invalid
replies (:mod:`.replies`: every reply is untrusted), aggregates the accepted ones with
:func:`aggregate` under the configured rule, evaluates on a fixed test subset, appends metrics
and checkpoints the server state. :class:`InProcessDispatcher` runs :func:`client_update` for
each participant in this process; other engines (worker processes, Flower) supply their own
:class:`~fissionvae.federation.dispatch.Dispatcher` and reuse everything else.

Failure is a state, not a silent empty round: a round whose replies were all rejected is marked
``failed`` in metrics.jsonl and on the progress bar, and after ``federation.max_failed_rounds``
such rounds in a row (counted across resumes: the streak is part of the checkpoint) the run stops
with :class:`RunFailed` and status "failed". Any other error also leaves status "failed" (with
its first line); Ctrl-C leaves status "stopped". Worker processes are closed either way.

Centralised training is the same loop with one client that holds all data (all groups),
participation 1 and one local epoch per round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fissionvae.artifacts import write_run_artifacts
from fissionvae.config import RunConfig
from fissionvae.evaluation.elbo import mean_terms
from fissionvae.federation.aggregation import aggregate
from fissionvae.federation.client import ClientResult, local_images
from fissionvae.federation.clipping import update_norm
from fissionvae.federation.dispatch import Dispatcher, InProcessDispatcher
from fissionvae.federation.replies import Rejected, screen_replies
from fissionvae.federation.sampling import sample_participants
from fissionvae.federation.server import Federation
from fissionvae.federation.state import ServerState
from fissionvae.federation.workers import start_pool
from fissionvae.privacy.plan import owners_of
from fissionvae.runs import RunDir
from fissionvae.seeding import torch_generator

__all__ = ["Dispatcher", "Federation", "InProcessDispatcher", "RoundOutcome", "RunFailed", "run_round", "train"]

FAILED_STREAK = "failed_rounds"  # ServerState.extra key: consecutive failed rounds (absent when 0)


class RunFailed(RuntimeError):
    """The run cannot go on (e.g. ``federation.max_failed_rounds`` rounds in a row rejected every reply)."""


@dataclass
class RoundOutcome:
    weights: dict
    results: list[ClientResult]
    participants: list[int]
    rejected: list[Rejected]
    client_states: dict = field(default_factory=dict)  # new optimiser states of accepted clients (keep mode)
    update_norms: dict[int, float] = field(default_factory=dict)  # client -> update L2 norm (clip_norm set)

    @property
    def failed(self) -> bool:
        """Replies came back but every one was rejected."""
        return bool(self.rejected) and not self.results


def run_round(
    fed: Federation, weights: dict, round_index: int, dispatch: Dispatcher, client_states: dict | None = None
) -> RoundOutcome:
    """One round: participants, dispatch, reply checks, aggregation.

    ``client_states`` (keep mode) maps client ids to their optimiser states; a rejected reply's
    new state is dropped, so that client continues from its last accepted one.
    """
    chosen = sample_participants(fed.cfg.seed, round_index, len(fed.client_groups), fed.participation)
    spec = fed.round_spec(round_index)
    states = (client_states or {}) if spec.keep_optimizer else {}
    replies = dispatch(weights, round_index, chosen, spec, states) if chosen else []
    valid, rejected = screen_replies(replies, weights, {cid: fed.expected(cid) for cid in chosen})
    rule = fed.rule
    norms = {} if rule.clip_norm is None else {r.client_id: update_norm(weights, r.weights) for r in valid}
    new_states = {r.client_id: r.optimizer_state for r in valid if r.optimizer_state is not None}
    plan = fed.privacy
    if plan is not None and plan.mode == "client":  # DP-FedAvg: its own clipped, noised sums
        new = plan.aggregate(weights, valid, owners_of(fed.model, fed.client_groups), round_index)
    else:
        new = aggregate(weights, valid, rule)
    return RoundOutcome(new, valid, chosen, rejected, new_states, norms)


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
        | ({"update_norm": outcome.update_norms[r.client_id]} if r.client_id in outcome.update_norms else {})
        for r in results
    ]
    spec = fed.round_spec(round_index)
    summary = {
        "type": "round",
        "round": rnd,
        "participants": len(outcome.participants),
        "clients": [r.client_id for r in results],
        "missing": sorted(
            set(outcome.participants) - {r.client_id for r in results} - {x.client_id for x in outcome.rejected}
        ),
        "rejected": [x.as_record() for x in outcome.rejected],
        "empty": not results,
        "failed": outcome.failed,
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
    is closed when this returns or raises). Returns the final server state. Raises
    :class:`RunFailed` after ``federation.max_failed_rounds`` failed rounds in a row.
    """
    torch.set_num_threads(cfg.federation.threads)
    fed = federation or Federation.from_config(cfg, data_dir, with_clients=dispatch is None, progress=progress)
    rounds = cfg.effective_rounds if max_rounds is None else min(max_rounds, cfg.effective_rounds)
    pool = start_pool(fed, rounds, progress) if dispatch is None else None
    try:
        return _train_rounds(
            cfg, run, fed, dispatch or pool or InProcessDispatcher(fed, progress), max_rounds, progress
        )
    finally:
        if pool is not None:
            pool.close()


def _with_streak(state: ServerState, streak: int) -> dict:
    """``state.extra`` recording ``streak`` failed rounds in a row (no key at all when 0: old checkpoints unchanged)."""
    extra = {k: v for k, v in state.extra.items() if k != FAILED_STREAK}
    return extra | ({FAILED_STREAK: streak} if streak else {})


def _failure_message(run: RunDir, round_number: int, streak: int, outcome: RoundOutcome) -> str:
    last = outcome.rejected[-1]
    reason = (last.reason.splitlines() or [""])[0]
    return (
        f"{run.path}: every reply was rejected in {streak} rounds in a row (rounds {round_number - streak + 1}-"
        f"{round_number}; federation.max_failed_rounds), e.g. {reason}; the run stopped with status 'failed'"
    )


def _train_rounds(
    cfg: RunConfig, run: RunDir, fed: Federation, dispatch: Dispatcher, max_rounds: int | None, progress: bool
) -> ServerState:
    """The round loop of :func:`train`; leaves status "stopped" on Ctrl-C and "failed" on any error."""
    state = run.load_state() if run.has_checkpoint() else fed.initial_state()
    fed.model.load_state_dict(state.weights)  # verifies the checkpoint fits before any file changes
    run.truncate_metrics(state.round)
    planned = cfg.effective_rounds
    stop = planned if max_rounds is None else min(planned, state.round + max_rounds)
    run.write_status(state, planned, running=True)
    bar = tqdm(
        range(state.round, stop), initial=state.round, total=planned, desc=cfg.name, unit="round", disable=not progress
    )
    try:
        for r in bar:
            new, outcome = _one_round(cfg, run, fed, dispatch, state, r, bar)
            run.save_state(new)
            state = new  # only now: a Ctrl-C before this line leaves the previous round in status and checkpoint
            run.write_status(state, planned, running=True)
            streak = state.extra.get(FAILED_STREAK, 0)
            if streak >= cfg.federation.max_failed_rounds:
                raise RunFailed(_failure_message(run, r + 1, streak, outcome))
        if fed.privacy is not None:
            tqdm.write(fed.privacy.write_report(state.privacy, run.path / "privacy.json"))
        write_run_artifacts(fed.model.cpu(), fed.groups, run, cfg)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            run.write_status(state, planned, running=False)
        raise
    except Exception as exc:
        with contextlib.suppress(OSError):
            run.write_status(state, planned, running=False, failure=(str(exc).splitlines() or [type(exc).__name__])[0])
        raise
    finally:
        bar.close()
    run.write_status(state, planned, running=False)  # "finished" only once images and plots exist
    return state


def _one_round(
    cfg: RunConfig, run: RunDir, fed: Federation, dispatch: Dispatcher, state: ServerState, r: int, bar: tqdm
) -> tuple[ServerState, RoundOutcome]:
    """Round ``r``: train, append its metrics, show it on the bar; returns the new (unsaved) state and the outcome."""
    start = time.perf_counter()
    outcome = run_round(fed, state.weights, r, dispatch, state.client_states)
    seconds = time.perf_counter() - start
    fed.model.load_state_dict(outcome.weights)
    records = round_records(fed, r, outcome, seconds, test_metrics(fed, r))
    privacy = state.privacy
    if fed.privacy is not None:
        privacy = fed.privacy.account(privacy, outcome.participants)
        fed.privacy.annotate(records, privacy)
    run.append_metrics(records)
    streak = int(state.extra.get(FAILED_STREAK, 0)) + 1 if outcome.failed else 0
    state = dataclasses.replace(
        state,
        round=r + 1,
        weights=outcome.weights,
        wall_seconds=state.wall_seconds + seconds,
        client_states=state.client_states | outcome.client_states,
        extra=_with_streak(state, streak),
        privacy=privacy,
    )
    flags = {"rejected": len(outcome.rejected), "FAILED": f"{streak} in a row"} if outcome.rejected else {}
    bar.set_postfix(
        clients=len(outcome.results),
        **{k: v for k, v in flags.items() if k != "FAILED" or outcome.failed},
        **{f"test_{t}": f"{records[-1][f'test/{t}']:.1f}" for t in fed.model.progress_terms},
    )
    return state, outcome
