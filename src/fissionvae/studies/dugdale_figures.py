"""The Dugdale study's Figures 1-4: reconstructions, generations, loss curves, t-SNE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fissionvae.artifacts import generation_grid
from fissionvae.data.federated import GroupData
from fissionvae.studies.dugdale_presets import LABELS, MODES, StudyRun
from fissionvae.studies.figures import LossCurve, grids_side_by_side, plot_joint_tsne, plot_loss_overlay

RECON_INPUTS = 30
GENERATIONS = 256
FILES = {
    "reconstructions": "figure1_reconstructions.png",
    "generations": "figure2_generations.png",
    "losses": "figure3_losses.png",
    "tsne": "figure4_tsne.png",
}


def figure_reconstructions(runs: dict[str, StudyRun], test: torch.Tensor, path: Path) -> Path:
    """Figure 1: the first 30 test inputs, then each model's reconstructions of them."""
    x = test[:RECON_INPUTS]
    gids = torch.zeros(len(x), dtype=torch.int64)
    panels = [("test inputs", x)] + [(f"{LABELS[m]} VAE", runs[m].model.reconstruct(x, gids)) for m in MODES]
    return grids_side_by_side(panels, nrow=6, path=path)


def figure_generations(runs: dict[str, StudyRun], path: Path) -> Path:
    """Figure 2: 256 generations per model from the same latent draws (the run seed's stream)."""
    panels = [(f"{LABELS[m]} VAE", generation_grid(runs[m].model, 0, GENERATIONS, runs[m].cfg.seed)) for m in MODES]
    return grids_side_by_side(panels, nrow=16, path=path, pixels_per_inch=110.0)


def draw_figures(
    out: Path,
    runs: dict[str, StudyRun],
    group: GroupData,
    images: dict[str, torch.Tensor],
    probs: dict[str, np.ndarray],
    curves: dict[str, LossCurve],
    tsne: dict[str, int],
) -> dict[str, str]:
    """Figures 1-4 as PNGs in ``out``; returns figure key -> file name."""
    figure_reconstructions(runs, group.test_images, out / FILES["reconstructions"])
    figure_generations(runs, out / FILES["generations"])
    plot_loss_overlay({f"{LABELS[m]} ({runs[m].schedule()})": curves[m] for m in MODES}, out / FILES["losses"])
    k, n = tsne["generated"], tsne["test"]
    generated = {f"{LABELS[m]} generations": (images[m][:k].float() / 255, probs[m][:k].argmax(axis=1)) for m in MODES}
    plot_joint_tsne(
        group.test_images[:n], group.test_labels[:n].numpy(), generated, out / FILES["tsne"], runs["federated"].cfg.seed
    )
    return dict(FILES)
