"""Speed of record-level DP-SGD: Opacus's per-sample gradient options side by side, and a round with
the worker pool, private against non-private (docs/benchmarks.md, "Differential privacy").

1. ``steps``: one thread, the project's model (``configs/mixed_mnist/fission_ld.yaml``: the
   784-512-256-16 MLP encoder and a 16-256-512-784 branch), batch 32, one client's images. Each
   option trains ``--steps`` DP-SGD steps (clip 1, noise 1) through
   :func:`fissionvae.privacy.record.private_steps`, the code the engines run; ``plain`` is the
   model's own non-private ``local_step``. Options run in turn, ``--repeat`` times (interleaved),
   medians. Before timing, each option's summed clipped gradient (noise 0) is checked against ghost
   clipping's on the same batch.
   ``ew`` (expanded weights) needs the model's ``forward`` to be the loss; our VAE's training step
   is ``terms()``, so it runs here through a wrapper module with Opacus's DP optimiser (bench only).
2. ``round``: one Mixed MNIST round of the same config at ``--scale`` of the data, participation 1,
   with a pool of ``--workers`` worker processes (one thread each): non-private, then record-level DP
   (the default ``grad_sample_mode``), interleaved ``--repeat`` times; samples/s as metrics.jsonl
   computes it and the ratio. The ratio is the result: the machine may be shared.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/dp_speed.py --data-dir ../shared/data --json /tmp/dp_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from fissionvae.config import load_config
from fissionvae.federation.client import local_images
from fissionvae.federation.engine import Federation, run_round
from fissionvae.federation.workers import WorkerPool
from fissionvae.privacy.record import only_trainable, private_steps

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "mixed_mnist" / "fission_ld.yaml"
MODES = ("ghost", "hooks", "functorch", "ew")
RECORD = ["privacy.mode=record", "privacy.noise_multiplier=1.0", "privacy.delta=1.0e-5", "privacy.clip_norm=1.0"]


def federation(data_dir: str, scale: float, private: bool) -> Federation:
    per_group = max(20, int(60000 * scale))
    sets = [f"data.groups.{i}.train_size={per_group}" for i in (0, 1)] + [
        "federation.participation=1.0",
        "train.local_epochs=1",
        "federation.threads=1",
        "eval.test_per_group=100",
    ]
    return Federation.from_config(load_config(CONFIG, sets + (RECORD if private else [])), data_dir)


@contextlib.contextmanager
def dp_step(fed: Federation, optimizer: torch.optim.Optimizer, mode: str, clip: float, noise: float):
    """The engine's DP-SGD step (``private_steps``), or the expanded-weights one (``ew``)."""
    if mode != "ew":
        with private_steps(fed.model, optimizer, clip, noise, 32, mode, torch.Generator()) as step:
            yield step
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with only_trainable(fed.model, params):
        yield expanded_weights(fed, optimizer, clip, noise)
    for p in params:
        p.grad_sample = None


def summed_gradient(fed: Federation, mode: str, idx: torch.Tensor) -> torch.Tensor:
    client, model = fed.clients[0], fed.model
    params = model.owned_parameters(client.groups)
    with dp_step(fed, torch.optim.SGD(params, lr=0.0), mode, 1.0, 0.0) as step:
        step(client.images[idx], client.group_ids[idx], torch.Generator().manual_seed(1))
    return torch.cat([p.grad.flatten() for p in params])


def time_steps(fed: Federation, mode: str, batches: list[torch.Tensor]) -> float:
    """Samples/s of ``len(batches)`` steps of ``mode`` (``plain``: the non-private local step)."""
    client, model = fed.clients[0], fed.model
    gen = torch.Generator().manual_seed(0)
    adam = model.local_optimizer(client.groups, 1e-3, True)
    if mode == "plain":
        start = time.perf_counter()
        for idx in batches:
            model.local_step(client.images[idx], client.group_ids[idx], adam, gen)
        return 32 * len(batches) / (time.perf_counter() - start)
    with dp_step(fed, adam, mode, 1.0, 1.0) as step:
        start = time.perf_counter()
        for idx in batches:
            step(client.images[idx], client.group_ids[idx], gen)
        return 32 * len(batches) / (time.perf_counter() - start)


class LossModule(torch.nn.Module):
    """The VAE's per-image training loss as ``forward`` (what expanded weights differentiate)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae
        self.generator = torch.Generator()

    def forward(self, x, g):
        return self.vae.terms(x, g, self.generator)["loss"]


def expanded_weights(fed: Federation, optimizer: torch.optim.Optimizer, clip: float, noise: float):
    """``step(images, group_ids, generator)`` of DP-SGD with Opacus's expanded weights (bench only)."""
    from opacus.grad_sample import GradSampleModuleExpandedWeights
    from opacus.optimizers import DPOptimizer

    loss = LossModule(fed.model)
    wrapped = GradSampleModuleExpandedWeights(loss, batch_first=True, loss_reduction="mean")
    dp_opt = DPOptimizer(
        optimizer, noise_multiplier=noise, max_grad_norm=clip, expected_batch_size=32, generator=torch.Generator()
    )

    def step(x, g, generator):
        loss.generator = generator
        dp_opt.zero_grad(set_to_none=True)
        wrapped(x, g).mean().backward()
        dp_opt.step()

    return step


def step_table(data_dir: str, steps: int, repeat: int) -> dict:
    fed = federation(data_dir, 0.1, private=False)
    n = fed.clients[0].num_samples
    batches = list(torch.randperm(n, generator=torch.Generator().manual_seed(0)).split(32))[:steps]
    reference = summed_gradient(fed, "ghost", batches[0])
    agree = {
        m: bool(torch.allclose(summed_gradient(fed, m, batches[0]), reference, rtol=1e-4, atol=1e-5)) for m in MODES
    }
    rates: dict[str, list[float]] = {}
    for _ in range(repeat):
        for mode in ("plain", *MODES):
            rates.setdefault(mode, []).append(time_steps(fed, mode, batches))
    return {
        "samples_per_s": {m: round(statistics.median(v), 1) for m, v in rates.items()},
        "range": {m: [round(min(v), 1), round(max(v), 1)] for m, v in rates.items()},
        "agrees_with_ghost": agree,
    }


def round_table(data_dir: str, scale: float, workers: int, repeat: int) -> dict:
    feds = {"plain": federation(data_dir, scale, False), "record": federation(data_dir, scale, True)}
    rates: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, fed in feds.items():
            weights = fed.initial_state().weights
            with WorkerPool(fed, workers) as pool:
                start = time.perf_counter()
                out = run_round(fed, weights, 0, pool)
                seconds = time.perf_counter() - start
            spec = fed.round_spec(0)
            rates.setdefault(name, []).append(sum(local_images(r.num_samples, spec) for r in out.results) / seconds)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "samples_per_s": {k: round(v, 1) for k, v in med.items()},
        "range": {k: [round(min(v), 1), round(max(v), 1)] for k, v in rates.items()},
        "ratio": round(med["record"] / med["plain"], 3),
        "clients": len(feds["plain"].clients),
        "images_per_client": feds["plain"].clients[0].num_samples,
        "workers": workers,
    }


def machine() -> dict:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    return {"cpu": model, "cores": os.cpu_count(), "loadavg": os.getloadavg(), "torch": torch.__version__,
            "python": platform.python_version()}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.05, help="fraction of each group's 60,000 images")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"machine_before": machine(), "steps": step_table(args.data_dir, args.steps, args.repeat)}
    result["round"] = round_table(args.data_dir, args.scale, args.workers, args.repeat)
    result["machine_after"] = machine()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from fissionvae.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
