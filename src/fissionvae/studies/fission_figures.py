"""The FissionVAE study's figures, drawn from the ledger alone (no run folder, no model).

- :func:`generation_figure`: per table, rows x (mode, group) of the 5 x 5 generation grids that
  each evaluation left in the ledger folder (``cells/*.png``); Figure 10's two rows are drawn
  from the same noise (the sample stream does not depend on the prior).
- :func:`loss_figure`: per-group test negative ELBO per round of the table's runs, from the loss
  series the ledger keeps for each run.

Both write greyscale / small PNGs through :mod:`fissionvae.viz`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fissionvae.studies.fission_ledger import Ledger, Outcome
from fissionvae.studies.fission_plan import EvalSpec, TableSpec
from fissionvae.viz import load_grey, save_figure, save_mosaic

MODE_SHORT = {"federated": "fed", "centralized": "central"}


def short(column: str) -> str:
    return MODE_SHORT.get(column, column)


def generation_figure(t: TableSpec, outcomes: dict[EvalSpec, Outcome], ledger: Ledger, path: Path) -> Path | None:
    """Rows of the table x (column, group) of generations; None when no cell of the table has a grid."""
    groups = next(iter(outcomes.values())).cfg.group_names
    cols = [(m, g) for m in t.columns for g in groups]

    def grid(ev: EvalSpec, group: str) -> np.ndarray | None:
        entry = outcomes[ev].entry
        name = (entry or {}).get("grids", {}).get(group)
        return None if name is None else load_grey(ledger.folder / "cells" / name)

    grids = [[grid(r.evals[m], g) for m, g in cols] for r in t.rows]
    if all(a is None for row in grids for a in row):
        return None
    labels = [f"{short(m)} {g}" if len(t.columns) > 1 else g for m, g in cols]
    return save_mosaic([r.label for r in t.rows], labels, grids, path)


def loss_figure(t: TableSpec, outcomes: dict[EvalSpec, Outcome], ledger: Ledger, path: Path) -> Path | None:
    """Per-group test loss per round of the table's runs (solid: federated, dashed: centralised)."""
    runs: dict[str, tuple[int, dict, bool]] = {}  # legend label -> (row index: the colour, loss series, central)
    for i, r in enumerate(t.rows):
        for m, ev in r.evals.items():
            o = outcomes[ev]
            record = ledger.runs.get(o.cfg.name)
            if record and any(record.get("loss", {}).values()):
                runs.setdefault(f"{r.label} [{short(m)}]", (i, record["loss"], o.cfg.mode == "centralized"))
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = next(iter(outcomes.values())).cfg.group_names
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for label, (row, loss, central) in runs.items():
        for ax, g in zip(axes[0], groups, strict=True):
            points = loss.get(g, [])
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "--" if central else "-",
                color=colors[row % len(colors)],
                label=label,
                linewidth=1.2,
            )
    for ax, g in zip(axes[0], groups, strict=True):
        ax.set_title(f"test negative ELBO, {g} (fixed test subset)", fontsize=10)
        ax.set_xlabel("round (centralised: epoch)")
        ax.set_ylabel("nats / image")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_rows = (len(labels) + 1) // 2
    fig.legend(
        handles, labels, loc="lower center", ncol=2, fontsize=7, bbox_to_anchor=(0.5, -0.02 - 0.035 * legend_rows)
    )
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
