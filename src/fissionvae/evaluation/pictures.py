"""The evaluation's pictures: per-group generation grids and the t-SNE figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fissionvae.artifacts import generation_grid
from fissionvae.data.federated import GroupData
from fissionvae.evaluation.options import EvalOptions
from fissionvae.models.protocol import GenerativeModel, LatentVariableModel
from fissionvae.viz import save_grid


def write_pictures(
    model: GenerativeModel,
    groups: list[GroupData],
    samples: list[Tensor],
    out: Path,
    seed: int,
    opts: EvalOptions,
    partners: list[int | None] | None = None,
) -> list[str]:
    """16x16 generation grids per group and the two t-SNE figures."""
    written = []
    partners = partners or [None] * len(groups)
    for gi, g in enumerate(groups):
        path = out / f"samples_{g.name}_16x16.png"
        save_grid(generation_grid(model, gi, 256, seed, opts.pathway, partners[gi]), path, nrow=16, scale=1)
        written.append(path.name)
    if opts.tsne:
        from fissionvae.evaluation.tsne import latent_means, plot_latent_tsne, plot_real_vs_generated_tsne

        n = opts.tsne_points
        test = torch.cat([g.test_images[:n] for g in groups])
        if isinstance(model, LatentVariableModel):  # a GAN has no encoder, hence no latent means
            gids = np.concatenate([np.full(min(n, len(g.test_images)), gi) for gi, g in enumerate(groups)])
            labels = torch.cat([g.test_labels[:n] for g in groups]).numpy()
            plot_latent_tsne(
                latent_means(model, test), gids, labels, [g.name for g in groups], out / "tsne_latent.png", seed
            )
            written.append("tsne_latent.png")
        gen = torch.cat([s[:n] for s in samples]).float() / 255
        plot_real_vs_generated_tsne(test, gen, out / "tsne_real_vs_generated.png", seed)
        written.append("tsne_real_vs_generated.png")
    return written
