"""Comparison figures for studies: image grids side by side, overlaid loss curves, a joint t-SNE.

Every function takes plain tensors / metric records and writes one PNG atomically (through
:func:`fissionvae.viz.save_figure`); none of them trains or evaluates anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from fissionvae.viz import image_grid, save_figure

# (metrics.jsonl term, axis title) of Dugdale's loss curves
LOSS_TERMS = (("recon", "reconstruction (BCE)"), ("kl_prior", "KL to N(0, I)"), ("loss", "total loss"))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grids_side_by_side(
    panels: list[tuple[str, Tensor]], nrow: int, path: str | Path, pixels_per_inch: float = 55.0
) -> Path:
    """One figure of image grids, left to right, each under its title.

    Parameters
    ----------
    panels
        (title, images) pairs; images are (N, C, H, W) floats in [0, 1].
    nrow
        Images per grid row.
    path
        PNG to write.
    pixels_per_inch
        Grid pixels per inch of figure (sets the size of the figure; the PNG is saved at 110
        dpi, so 55 draws every grid pixel as about 2 x 2 PNG pixels).

    Returns
    -------
    Path
        ``path``.
    """
    plt = _plt()
    grids = [image_grid(images, nrow) for _, images in panels]
    height, width = max(g.shape[0] for g in grids), max(g.shape[1] for g in grids)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(len(panels) * width / pixels_per_inch + 0.5, height / pixels_per_inch + 0.6)
    )
    for ax, (title, _), grid in zip(np.atleast_1d(axes), panels, grids, strict=True):
        ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    out = save_figure(fig, path)
    plt.close(fig)
    return out


@dataclass(frozen=True)
class LossCurve:
    """Per-round loss terms of one run on a common x axis (passes over the training set).

    ``x_end[i]`` is the number of training-set passes completed after round i (images
    processed / training images); train terms are means over the round, so they are drawn at
    the middle of the round (``x_mid``); test terms are measured after it (``x_end``).
    """

    x_mid: np.ndarray
    x_end: np.ndarray
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]


def loss_curve(metrics: list[dict], epochs_per_round: int, train_images: int) -> LossCurve:
    """The :class:`LossCurve` of a run from its metrics.jsonl records.

    Parameters
    ----------
    metrics
        The run's records (client and round lines).
    epochs_per_round
        Local epochs per round (1 for centralised runs).
    train_images
        Size of the whole training set (all clients together).
    """
    rounds = [m for m in metrics if m.get("type") == "round"]
    processed = {m["round"]: 0 for m in rounds}
    for m in metrics:
        if m.get("type") == "client" and m["round"] in processed:
            processed[m["round"]] += m["num_samples"] * epochs_per_round
    steps = np.array([processed[m["round"]] for m in rounds], dtype=float) / train_images
    x_end = np.cumsum(steps)
    terms = [t for t, _ in LOSS_TERMS]
    return LossCurve(
        x_mid=x_end - steps / 2,
        x_end=x_end,
        train={t: np.array([m.get(f"train/{t}", np.nan) for m in rounds]) for t in terms},
        test={t: np.array([m.get(f"test/{t}", np.nan) for m in rounds]) for t in terms},
    )


def plot_loss_overlay(curves: dict[str, LossCurve], path: str | Path, log_y: bool = True) -> Path:
    """Dugdale's loss curves, overlaid: one panel per term, train (solid) and test (dashed).

    Parameters
    ----------
    curves
        Label -> curve (e.g. "centralised (25 epochs)" -> ...); one colour per label.
    path
        PNG to write.
    log_y
        Logarithmic y axes (the first rounds' losses are far above the rest).
    """
    plt = _plt()
    fig, axes = plt.subplots(1, len(LOSS_TERMS), figsize=(5 * len(LOSS_TERMS), 4))
    for color, (label, c) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], curves.items(), strict=False):
        for ax, (term, _) in zip(axes, LOSS_TERMS, strict=True):
            ax.plot(c.x_mid, c.train[term], "-", color=color, marker=".", label=f"{label}: train")
            ax.plot(c.x_end, c.test[term], "--", color=color, marker="x", label=f"{label}: test")
    for ax, (_, title) in zip(axes, LOSS_TERMS, strict=True):
        ax.set_title(title)
        ax.set_ylabel("nats / image")
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    fig.supxlabel("passes over the training set (images processed / training images)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def plot_joint_tsne(
    test: Tensor,
    test_labels: np.ndarray,
    generated: dict[str, tuple[Tensor, np.ndarray]],
    path: str | Path,
    seed: int = 0,
) -> Path:
    """Dugdale's Figure 4 on one shared t-SNE embedding: test images, then each model's generations.

    All images are embedded together (PCA to 50 dimensions, then t-SNE; see
    :func:`fissionvae.evaluation.tsne.embed`), so the panels share coordinates. Panel 1 shows
    the test images coloured by their label; each further panel shows the test images in grey
    and one model's generations coloured by the class a classifier predicts for them.

    Parameters
    ----------
    test
        (N, C, H, W) test images in [0, 1].
    test_labels
        Their labels (N,).
    generated
        Panel title -> (generated images in [0, 1], predicted labels).
    path
        PNG to write.
    seed
        PCA / t-SNE random state.
    """
    from fissionvae.evaluation.tsne import embed

    parts = [test] + [g for g, _ in generated.values()]
    xy = embed(np.concatenate([p.flatten(1).float().numpy() for p in parts]), seed)
    bounds = np.cumsum([0] + [len(p) for p in parts])
    plt = _plt()
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 5), sharex=True, sharey=True)
    real = xy[: bounds[1]]
    sc = axes[0].scatter(real[:, 0], real[:, 1], s=3, c=test_labels, cmap="tab10", vmin=-0.5, vmax=9.5)
    axes[0].set_title(f"test images ({len(test)})")
    for i, (title, (_, predicted)) in enumerate(generated.items(), start=1):
        pts = xy[bounds[i] : bounds[i + 1]]
        axes[i].scatter(real[:, 0], real[:, 1], s=3, c="0.85")
        axes[i].scatter(pts[:, 0], pts[:, 1], s=3, c=predicted, cmap="tab10", vmin=-0.5, vmax=9.5)
        axes[i].set_title(f"{title} ({len(pts)})")
    fig.suptitle(
        "one t-SNE of all images; colour: label of test images, predicted class of generations (test images grey "
        "beside them)",
        fontsize=10,
    )
    fig.colorbar(sc, ax=list(axes), ticks=range(10), label="digit", shrink=0.8)
    out = save_figure(fig, path)
    plt.close(fig)
    return out
