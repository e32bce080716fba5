"""Why Dugdale's conv VAE learns slowly here: short controlled centralised runs, one change each.

Each variant trains the ``configs/dugdale/federated.yaml`` model centrally (one Adam, batch 128)
for ``--steps`` minibatch steps on a seeded MNIST training subset, then reports on a fixed test
subset: the reconstruction term (nats/image, BCE), KL, the mean background intensity of the
reconstructions (pixels that are 0 in the input) and the floor (mean training image's BCE).
Same seed, same data order and same initial weights per variant (where shapes allow).

    PYTHONPATH=src python bench/dugdale_learning.py --data-dir ../shared/data --steps 300
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fissionvae.config import load_config
from fissionvae.data.federated import load_groups
from fissionvae.evaluation.floor import FloorModel
from fissionvae.models.vae import build_model
from fissionvae.seeding import torch_generator

VARIANTS = {
    "notebook (faithful)": [],
    "no output BatchNorm": ["model.decoder.output_norm=false"],
    "latent 20": ["model.latent_dim=20"],
    "lr 3e-3": ["train.lr=0.003"],
    "no output BN, lr 3e-3": ["model.decoder.output_norm=false", "train.lr=0.003"],
}


def run(overrides: list[str], data_dir: str, steps: int, train_size: int) -> dict[str, float]:
    sets = [f"data.groups.0.train_size={train_size}", "data.groups.0.test_size=1000", *overrides]
    cfg = load_config("configs/dugdale/federated.yaml", sets)
    (group,) = load_groups(cfg, data_dir)
    model = build_model(cfg)
    opt = model.local_optimizer([0], cfg.train.lr, cfg.train.fused_adam)
    gen = torch_generator(cfg.seed, "client", 0)
    x_all, n = group.train_images, group.train_images.shape[0]
    start = time.process_time()
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, n, (cfg.train.batch_size,), generator=gen)
        model.local_step(x_all[idx], torch.zeros(len(idx), dtype=torch.long), opt, gen)
    cpu = time.process_time() - start
    model.eval()
    x = group.test_images
    with torch.no_grad():
        terms = model.terms(x, torch.zeros(len(x), dtype=torch.long), torch_generator(0, "eval"))
        recon = model.reconstruct(x, torch.zeros(len(x), dtype=torch.long))
    floor = FloorModel.fit(x_all, "bernoulli").nll(x).mean().item()
    return {
        "recon": terms["recon"].mean().item(),
        "kl": terms["kl_prior"].mean().item(),
        "background": recon[x == 0].mean().item(),
        "floor": floor,
        "cpu_s": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train-size", type=int, default=20000)
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        result = run(overrides, args.data_dir, args.steps, args.train_size)
        print(json.dumps({"variant": name, "steps": args.steps, **result}), flush=True)


if __name__ == "__main__":
    main()
