"""A run's privacy plan: the resolved noise multiplier and sample rates, and its round-loop hooks.

The plan is a pure function of the config and the clients' sample counts (which the server
computes from the config and the data split, never from client replies), so the in-process
engine, the worker pool and a Flower server build the same plan. Its state, the accountants'
histories and each client's current epsilon, is the ``privacy`` field of the server state:

    {"clients": {client id: history}, "server": history, "epsilon": {client id: epsilon}}

Record level: every client asked to train in a round (its reply accepted or not: it trained
and may have sent) adds ``steps`` DP-SGD steps at its own sample rate ``batch / n_i`` to its
history. Client level: every round adds one step of the subsampled Gaussian mechanism at
q = participation to the server's history (also an empty round: its noise was released).
With ``target_epsilon`` the noise multiplier is calibrated so that a client taking part in
*every* round stays within the target (record level: for the worst client size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.io import atomic_write_json
from fissionvae.privacy import accounting
from fissionvae.privacy.client_level import dp_fedavg
from fissionvae.privacy.record import dp_steps, sample_rate
from fissionvae.privacy.settings import grad_sample_mode
from fissionvae.seeding import torch_generator


@dataclass(frozen=True)
class PrivacyPlan:
    mode: str  # "record" or "client"
    noise_multiplier: float
    clip_norm: float
    delta: float
    accountant: str
    grad_sample_mode: str
    seed: int
    participation: float
    sizes: tuple[int, ...]
    client_rates: tuple[tuple[float, int], ...]  # record level: (sample rate, steps per round) per client

    @classmethod
    def build(cls, cfg: RunConfig, sizes: Sequence[int]) -> PrivacyPlan | None:
        p = cfg.privacy
        if p.mode == "none":
            return None
        assert p.delta is not None and p.clip_norm is not None  # validate_privacy
        t = cfg.train
        epochs = 1 if cfg.mode == "centralized" else t.local_epochs
        steps = None if cfg.mode == "centralized" else t.local_steps
        rates = tuple((sample_rate(n, t.batch_size), dp_steps(n, epochs, t.batch_size, steps)) for n in sizes)
        participation = 1.0 if cfg.mode == "centralized" else cfg.federation.participation
        sigma = p.noise_multiplier
        if sigma is None:
            assert p.target_epsilon is not None
            rounds = cfg.effective_rounds
            if p.mode == "client":
                sigma = accounting.noise_for(p.target_epsilon, p.delta, participation, rounds, p.accountant)
            else:
                sigma = max(
                    accounting.noise_for(p.target_epsilon, p.delta, q, s * rounds, p.accountant) for q, s in set(rates)
                )
        return cls(
            p.mode, sigma, p.clip_norm, p.delta, p.accountant, grad_sample_mode(cfg), cfg.seed, participation,
            tuple(sizes), rates,
        )  # fmt: skip

    # ---------------------------------------------------------------- clients
    def spec_fields(self) -> dict:
        """LocalTrainSpec fields of a round (record level: DP-SGD at every client)."""
        if self.mode != "record":
            return {}
        return {
            "dp_clip": self.clip_norm,
            "dp_noise": self.noise_multiplier,
            "dp_grad_sample_mode": self.grad_sample_mode,
        }

    # ---------------------------------------------------------------- server
    def aggregate(self, weights: dict, results: Sequence, owners: dict[str, int], round_index: int) -> dict:
        """Client level: DP-FedAvg of the accepted replies (see client_level.py)."""
        generator = torch_generator(self.seed, "privacy", 1, round_index)
        updates = [(r.client_id, r.weights) for r in results]
        return dp_fedavg(weights, updates, owners, self.participation, self.noise_multiplier, self.clip_norm, generator)

    def account(self, state: dict, participants: Sequence[int]) -> dict:
        """The privacy state after one more round in which ``participants`` were asked to train."""
        clients = {int(k): v for k, v in state.get("clients", {}).items()}
        eps = {int(k): float(v) for k, v in state.get("epsilon", {}).items()}
        server = state.get("server", [])
        if self.mode == "record":
            for cid in participants:
                q, steps = self.client_rates[cid]
                clients[cid] = accounting.record(clients.get(cid, []), self.noise_multiplier, q, steps)
                eps[cid] = accounting.epsilon(clients[cid], self.delta, self.accountant)
        else:
            server = accounting.record(server, self.noise_multiplier, self.participation, 1)
            value = accounting.epsilon(server, self.delta, self.accountant)
            eps = {cid: value for cid in range(len(self.sizes))}
        return {"clients": clients, "server": server, "epsilon": eps}

    def summary(self, state: dict) -> dict:
        """What metrics.jsonl's round line and privacy.json say: settings, each client's epsilon, the worst."""
        eps = {int(k): float(v) for k, v in state.get("epsilon", {}).items()}
        every = {cid: eps.get(cid, 0.0) for cid in range(len(self.sizes))}
        return {
            "privacy/mode": self.mode,
            "privacy/delta": self.delta,
            "privacy/noise_multiplier": self.noise_multiplier,
            "privacy/clip_norm": self.clip_norm,
            "privacy/accountant": self.accountant,
            "privacy/epsilon_max": max(every.values()) if every else 0.0,
            "privacy/epsilon": [every[c] for c in sorted(every)],
        }

    def annotate(self, records: list[dict], state: dict) -> None:
        """metrics.jsonl: each client line gets its epsilon after the round; the round line the summary."""
        summary = self.summary(state)
        for rec in records[:-1]:
            rec["privacy/epsilon"] = summary["privacy/epsilon"][rec["client"]]
        records[-1].update(summary)

    def write_report(self, state: dict, path: Path) -> str:
        """Write the end-of-run privacy.json (atomically); return the line the command prints."""
        summary = self.summary(state)
        atomic_write_json(path, {k.removeprefix("privacy/"): v for k, v in summary.items()})
        return (
            f"privacy ({self.mode} level): worst client epsilon {summary['privacy/epsilon_max']:.4g} "
            f"at delta {self.delta:g}; every client's in {path}"
        )


def owners_of(model, client_groups: Sequence[Sequence[int]]) -> dict[str, int]:
    """Every state-dict key some client owns -> how many clients own it."""
    counts: dict[str, int] = {}
    for groups in client_groups:
        for key in model.owned_keys(list(groups)):
            counts[key] = counts.get(key, 0) + 1
    return counts
