"""The model-replacement attack against each server-side defence, on a tiny Mixed MNIST federation.

One client (client 0, group mnist) replies every round with its honestly trained weights
multiplied by ``--scale`` (default 1e6): finite, the right keys, shapes and dtypes, the right
sample count, so every reply check passes and only the aggregation rule stands between it and
the global model. Each defence is run with and without the attacker; reported per run:

- ``test/neg_elbo``: the mean per-image negative ELBO (nats) on the first 200 test images of each
  group after the last round (``nan``/``inf`` when the model was destroyed);
- ``rel. distance``: ``||w - w_ref|| / ||w_ref||`` over all floating-point weights, where ``w_ref``
  is the honest FedAvg run's final model;
- ``rejected``: replies rejected over all rounds (after a destroyed round, honest clients train
  from huge weights and send non-finite ones back).

The federation: 2 groups (MNIST, FashionMNIST) x 5 clients, 500 training images per group
(100 per client), participation 1, 3 rounds of 1 local epoch, batch 32, the tiny MLP of the
unit tests (``tests/helpers.tiny_config``), seed 3, ``federation.workers: 1``.

    PYTHONPATH=src python bench/attack.py --data-dir ../shared/data --clip-norm 2.0
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch

from fissionvae.config import RunConfig, deep_merge, load_config
from fissionvae.federation.dispatch import InProcessDispatcher
from fissionvae.federation.engine import Federation, train
from fissionvae.federation.replies import Reply
from fissionvae.runs import RunDir

ATTACKER = 0


def attack_config(data_dir: Path, federation: dict) -> RunConfig:
    groups = [
        {"name": "mnist", "dataset": "mnist", "clients": 5, "train_size": 500, "test_size": 200},
        {"name": "fashion", "dataset": "fashion-mnist", "clients": 5, "train_size": 500, "test_size": 200},
    ]
    raw = {
        "name": "attack",
        "seed": 3,
        "data": {"dir": str(data_dir), "download": False, "groups": groups},
        "model": {
            "latent_dim": 8,
            "prior": "wave",
            "decoder_branches": True,
            "encoder_hidden": [64],
            "decoder": {"hidden": [64], "latent_hidden": [16]},
        },
        "federation": {"participation": 1.0, "workers": 1},
        "train": {"rounds": 3, "local_epochs": 1, "batch_size": 32},
        "eval": {"test_per_group": 200, "grid_size": 16, "recon_per_group": 4},
    }
    return load_config(raw=deep_merge(raw, {"federation": federation}))


class Attacker:
    """The honest in-process dispatcher, except that client ``ATTACKER`` scales its floating weights."""

    def __init__(self, fed: Federation, scale: float):
        self.honest = InProcessDispatcher(fed)
        self.scale = scale

    def __call__(self, weights, round_index, participants, spec, client_states) -> list[Reply]:
        replies = self.honest(weights, round_index, participants, spec, client_states)
        for r in replies:
            if r.client_id == ATTACKER:
                r.weights = {k: v * self.scale if v.is_floating_point() else v for k, v in r.weights.items()}
        return replies


def run_once(data_dir: Path, federation: dict, scale: float | None) -> tuple[dict, dict]:
    cfg = attack_config(data_dir, federation)
    fed = Federation.from_config(cfg)
    dispatch = Attacker(fed, scale) if scale is not None else InProcessDispatcher(fed)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(tmp, cfg, "attack")
        state = train(cfg, run, progress=False, federation=fed, dispatch=dispatch)
        rounds = [m for m in run.metrics() if m["type"] == "round"]
        norms = [m["update_norm"] for m in run.metrics() if m["type"] == "client" and "update_norm" in m]
    summary = {
        "neg_elbo": rounds[-1]["test/neg_elbo"],
        "rejected": sum(len(m["rejected"]) for m in rounds),
        "norms": norms,
    }
    return state.weights, summary


def distance(w: dict, ref: dict) -> float:
    num = sum(float((w[k].double() - ref[k].double()).pow(2).sum()) for k in ref if ref[k].is_floating_point())
    den = sum(float(ref[k].double().pow(2).sum()) for k in ref if ref[k].is_floating_point())
    return math.sqrt(num / den) if math.isfinite(num) else math.inf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1e6)
    parser.add_argument("--clip-norm", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    defences = {
        "fedavg (no defence)": {},
        f"fedavg + clip_norm {args.clip_norm:g}": {"clip_norm": args.clip_norm},
        "trimmed_mean 0.2": {"aggregator": "trimmed_mean", "trim_fraction": 0.2},
        "median": {"aggregator": "median"},
        f"median + clip_norm {args.clip_norm:g}": {"aggregator": "median", "clip_norm": args.clip_norm},
    }
    ref, logged = run_once(args.data_dir, {"clip_norm": 1e9}, None)  # FedAvg; a clip this large only logs norms
    norms = sorted(logged["norms"])
    print(
        f"honest update norms ({len(norms)} client updates): min {norms[0]:.3g}, "
        f"median {norms[len(norms) // 2]:.3g}, max {norms[-1]:.3g}"
    )
    print("| defence | attacker | test neg-ELBO (nats) | rel. distance to honest FedAvg | replies rejected |")
    print("|---|---|---:|---:|---:|")
    for name, options in defences.items():
        for scale in (None, args.scale):
            weights, s = run_once(args.data_dir, options, scale)
            who = "none" if scale is None else f"client 0 x{scale:g}"
            print(f"| {name} | {who} | {s['neg_elbo']:.2f} | {distance(weights, ref):.3g} | {s['rejected']} |")


if __name__ == "__main__":
    main()
