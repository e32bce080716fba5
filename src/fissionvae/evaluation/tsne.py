"""t-SNE pictures: latent means of test images, and Dugdale's real-vs-generated images.

Both embed with scikit-learn's TSNE (PCA initialisation, perplexity 30, a fixed random state);
pixel-space points are first reduced to 50 PCA components, as is customary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fissionvae.models.protocol import LatentVariableModel
from fissionvae.viz import save_figure


def embed(points: np.ndarray, seed: int = 0, pca_dims: int | None = 50) -> np.ndarray:
    """(N, D) -> (N, 2) t-SNE embedding (after PCA to ``pca_dims`` when D is larger)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = np.asarray(points, dtype=np.float64)
    if pca_dims and x.shape[1] > pca_dims:
        x = PCA(n_components=pca_dims, random_state=seed).fit_transform(x)
    perplexity = min(30.0, max(2.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)


@torch.inference_mode()
def latent_means(model: LatentVariableModel, images: Tensor, batch_size: int = 1000) -> np.ndarray:
    """Means of q(z1|x) of ``images``, batch by batch on the model's device."""
    device = next(model.parameters()).device
    return torch.cat(
        [model.encode(images[i : i + batch_size].to(device)).mean.cpu() for i in range(0, len(images), batch_size)]
    ).numpy()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latent_tsne(
    points: np.ndarray, groups: np.ndarray, labels: np.ndarray, group_names: list[str], path: str | Path, seed: int = 0
) -> Path:
    """Two panels of the same embedding of latent means: coloured by group, and by (group, class)."""
    xy = embed(points, seed, pca_dims=None)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    for gi, name in enumerate(group_names):
        sel = groups == gi
        axes[0].scatter(xy[sel, 0], xy[sel, 1], s=3, alpha=0.6, label=name)
    classes = groups * (labels.max() + 1) + labels
    sc = axes[1].scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.6, c=classes, cmap="tab20")
    axes[0].legend(markerscale=4)
    axes[0].set_title("t-SNE of latent means (test images) by group")
    axes[1].set_title("... by group x class")
    fig.colorbar(sc, ax=axes[1], label="group * classes + class")
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_real_vs_generated_tsne(
    real: Tensor, generated: Tensor, path: str | Path, seed: int = 0, title: str = ""
) -> Path:
    """Dugdale's Figure 4: one t-SNE of test images and generated images together."""
    pts = torch.cat([real.flatten(1), generated.flatten(1)]).numpy()
    xy = embed(pts, seed)
    n = len(real)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.scatter(xy[:n, 0], xy[:n, 1], s=3, alpha=0.5, label=f"test images ({n})")
    ax.scatter(xy[n:, 0], xy[n:, 1], s=3, alpha=0.5, label=f"generated ({len(generated)})")
    ax.legend(markerscale=4)
    ax.set_title(title or "t-SNE: test vs generated images")
    out = save_figure(fig, path)
    plt.close(fig)
    return out
