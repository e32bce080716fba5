"""Does a fresh Adam shock a partly trained Dugdale VAE? Per-step KL after a restart vs continuing.

Measured for docs/results/dugdale.md ("Why the federated KL is high"). Needs the reduced
study's centralised run; run from the repository root:

    .venv/bin/python docs/results/dugdale/adam_restart.py runs/dugdale-reduced-centralized-68e48dc5 ../shared/data
"""

import copy
import sys

import torch

from fissionvae.api import load_run
from fissionvae.data.federated import load_groups


def steps(model, optimizer, images, n, generator):
    """``n`` Adam steps on random batches of 128; per-step (recon, KL) batch means in nats."""
    model.train()
    gids, out = torch.zeros(128, dtype=torch.long), []
    for _ in range(n):
        batch = images[torch.randint(0, len(images), (128,), generator=generator)]
        terms = model.terms(batch, gids, generator)
        optimizer.zero_grad()
        terms["loss"].mean().backward()
        optimizer.step()
        out.append((round(terms["recon"].mean().item()), round(terms["kl_prior"].mean().item())))
    return out


def main(run_dir: str, data_dir: str) -> None:
    torch.set_num_threads(1)
    model, cfg = load_run(run_dir)
    images = load_groups(cfg, data_dir)[0].train_images[:5000]
    g = torch.Generator().manual_seed(0)
    warm = copy.deepcopy(model)
    adam = torch.optim.Adam(warm.parameters(), lr=1e-3)
    print("warm-up, fresh Adam on the checkpoint", steps(warm, adam, images, 20, g))
    state = copy.deepcopy(warm.state_dict())
    print("continue, same Adam", steps(warm, adam, images, 12, g))
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(state)
    print("same weights, fresh Adam", steps(fresh, torch.optim.Adam(fresh.parameters(), lr=1e-3), images, 12, g))


if __name__ == "__main__":
    main(*sys.argv[1:3])
