"""Pictures every run folder gets: reconstructions, per-group generations, loss curves.

A DCGAN run (``model.kind: dcgan``) has no reconstructions and no per-group generator: it gets
``samples.png`` (one pool of generations) and ``plots/loss.png`` with its D and G losses.
"""

from __future__ import annotations

import torch

from fissionvae.config import RunConfig
from fissionvae.data.federated import GroupData
from fissionvae.models.protocol import GenerativeModel, LatentVariableModel
from fissionvae.runs import RunDir
from fissionvae.seeding import torch_generator
from fissionvae.viz import plot_gan_losses, plot_losses, save_grid


def reconstruction_rows(model: LatentVariableModel, groups: list[GroupData], per_group: int) -> torch.Tensor:
    """For each group: a row of test inputs followed by a row of their reconstructions."""
    rows = []
    for gi, g in enumerate(groups):
        x = g.test_images[:per_group]
        rows += [x, model.reconstruct(x, torch.full((len(x),), gi, dtype=torch.int64))]
    return torch.cat(rows)


def generation_grid(
    model: GenerativeModel, group: int, n: int, seed: int, pathway: str | None = None, prior_group: int | None = None
) -> torch.Tensor:
    """``n`` samples of ``group`` from the ``sample`` stream (same images for the same seed).

    ``prior_group`` draws z1 from that group's prior (the prior swap) with the same noise draws.
    """
    return model.sample(
        group, n, torch_generator(seed, "sample", group), pathway=pathway, prior_group=prior_group
    ).cpu()


def write_run_artifacts(model: GenerativeModel, groups: list[GroupData], run: RunDir, cfg: RunConfig) -> None:
    """reconstructions.png, samples_<group>.png and plots/loss.png in the run folder."""
    model.eval()
    if not isinstance(model, LatentVariableModel):  # no encoder: no reconstructions, one pool of samples
        save_grid(
            generation_grid(model, 0, cfg.eval.grid_size, cfg.seed),
            run.images_dir / "samples.png",
            nrow=max(1, int(cfg.eval.grid_size**0.5)),
        )
        plot_gan_losses(run.metrics(), run.plots_dir / "loss.png", title=cfg.name)
        return
    per_group = cfg.eval.recon_per_group
    save_grid(reconstruction_rows(model, groups, per_group), run.images_dir / "reconstructions.png", nrow=per_group)
    nrow = max(1, int(cfg.eval.grid_size**0.5))
    for gi, g in enumerate(groups):
        save_grid(
            generation_grid(model, gi, cfg.eval.grid_size, cfg.seed),
            run.images_dir / f"samples_{g.name}.png",
            nrow=nrow,
        )
    plot_losses(run.metrics(), run.plots_dir / "loss.png", title=cfg.name)
