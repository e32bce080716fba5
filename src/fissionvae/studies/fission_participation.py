"""Which groups trained in each federated round, and how each group's test loss follows that mix.

With Bernoulli(p) participation a round's cohort may hold, say, 2 MNIST and 6 FashionMNIST clients.
FedAvg then moves the shared weights towards FashionMNIST, and the test loss measured after that
round shows it: MNIST's rises, FashionMNIST's falls. A federated run's numbers are those of its
last round's model, so they depend on who took part in that round. This module measures that,
from the ledger alone:

- :func:`group_counts`: each group's clients in each round, recomputed from the config (the cohort
  is a pure function of (seed, round), :func:`fissionvae.federation.sampling.sample_participants`),
  so it is known also for runs whose folders are gone;
- :func:`share_loss_correlation`: per group, Pearson's r between the group's share of a round's
  participants and its test loss after the round (negative: more of its clients, lower loss);
- :func:`participation_blocks`: the page's section (a table per federated run and a figure).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fissionvae.config import RunConfig
from fissionvae.data.federated import client_groups
from fissionvae.federation.sampling import sample_participants
from fissionvae.studies.fission_ledger import Ledger, Outcome
from fissionvae.studies.fission_options import PAGE
from fissionvae.studies.fission_plan import EvalSpec
from fissionvae.studies.page_render import Block
from fissionvae.viz import save_figure

MIN_ROUNDS = 10  # fewer rounds say nothing about a correlation (the reduced runs have 4)


def group_counts(cfg: RunConfig) -> dict[str, list[int]]:
    """Per group name, how many of its clients took part in each round 1..R of a federated config."""
    groups = client_groups(cfg)
    counts = {g: [0] * cfg.effective_rounds for g in cfg.group_names}
    for r in range(cfg.effective_rounds):
        for cid in sample_participants(cfg.seed, r, len(groups), cfg.federation.participation):
            for gi in groups[cid]:
                counts[cfg.group_names[gi]][r] += 1
    return counts


def group_shares(counts: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Per group, its share of each round's participants (NaN for a round without participants)."""
    total = np.sum([np.asarray(c) for c in counts.values()], axis=0)
    with np.errstate(invalid="ignore"):
        return {g: np.asarray(c) / total for g, c in counts.items()}


def share_loss_correlation(counts: dict[str, list[int]], loss: dict[str, list]) -> dict[str, float | None]:
    """Per group, Pearson's r between its share of a round's participants and its test loss after that round.

    ``loss`` is the ledger's series, group -> [[round, value], ...] (rounds from 1). Rounds without
    participants, or without a loss, are left out; None where fewer than :data:`MIN_ROUNDS` remain or
    either series is constant.
    """
    out: dict[str, float | None] = {}
    for g, shares in group_shares(counts).items():
        series = {int(r): float(v) for r, v in loss.get(g, [])}
        rounds = [r for r in range(1, len(shares) + 1) if not np.isnan(shares[r - 1]) and r in series]
        share = np.array([shares[r - 1] for r in rounds])
        value = np.array([series[r] for r in rounds])
        ok = len(rounds) >= MIN_ROUNDS and share.std() > 0 and value.std() > 0
        out[g] = float(np.corrcoef(share, value)[0, 1]) if ok else None
    return out


def federated_runs(outcomes: dict[EvalSpec, Outcome], ledger: Ledger) -> list[tuple[Outcome, dict]]:
    """The federated runs of the page with a loss series of at least :data:`MIN_ROUNDS` rounds, each once,
    with their default evaluation's outcome and their ledger record."""
    found: dict[str, tuple[Outcome, dict]] = {}
    for o in outcomes.values():
        record = ledger.runs.get(o.cfg.name)
        if o.cfg.mode != "federated" or o.spec.result_name != "eval" or not record:
            continue
        if min((len(v) for v in record.get("loss", {}).values()), default=0) >= MIN_ROUNDS:
            found.setdefault(o.cfg.name, (o, record))
    return list(found.values())


def _last_vs_best(loss: list) -> str:
    values = [float(v) for _, v in loss]
    return f"{values[-1]:.0f} ({values[-1] / min(values) - 1:+.0%})" if values else "-"


def participation_blocks(outcomes: dict[EvalSpec, Outcome], ledger: Ledger, assets: Path, figures: dict) -> list[Block]:
    """The page's participation section; empty when no federated run has enough rounds."""
    runs = federated_runs(outcomes, ledger)
    if not runs:
        return []
    groups = runs[0][0].cfg.group_names
    rows = []
    for o, record in runs:
        counts = group_counts(o.cfg)
        r = share_loss_correlation(counts, record["loss"])
        purity = ((o.entry or {}).get("numbers") or {}).get("purity") or {}
        rows.append(
            [
                o.cfg.name,
                str(o.cfg.seed),
                " / ".join(str(counts[g][-1]) for g in groups),
                " / ".join("-" if r[g] is None else f"{r[g]:+.2f}" for g in groups),
                " / ".join(_last_vs_best(record["loss"].get(g, [])) for g in groups),
                " / ".join(f"{purity[g]:.2f}" if g in purity else "-" for g in groups),
            ]
        )
    per = " / ".join(groups)
    blocks: list[Block] = [
        ("h", 2, "Participation: the last round decides the federated numbers"),
        (
            "p",
            "Each round, every client takes part with probability `federation.participation`, so a round's "
            "cohort may lean to one group. The cohort depends only on (seed, round), so the federated runs of "
            "one seed all saw the same sequence. For each federated run with at least "
            f"{MIN_ROUNDS} rounds: the last round's clients per group, Pearson's r between a group's share of a "
            "round's participants and that group's test negative ELBO after the round (negative: the more of "
            "its clients took part, the lower its loss), the last round's test loss (nats/image) against the "
            "run's best round, and the group purity of the last round's model.",
        ),
        (
            "table",
            [
                "run",
                "seed",
                f"last round's clients ({per})",
                f"r(share, test loss) ({per})",
                f"last-round test loss vs best ({per})",
                f"purity ({per})",
            ],
            rows,
        ),
    ]
    path = participation_figure(runs, assets / "participation.png")
    figures["participation"] = path.name
    return blocks + [
        (
            "p",
            "Test negative ELBO per round (lines) over the group's share of that round's participants (bars), "
            "one row per seed:",
        ),
        ("img", f"{PAGE}/{path.name}", "test loss against each round's participants"),
    ]


def participation_figure(runs: list[tuple[Outcome, dict]], path: Path) -> Path:
    """Rows: seeds; columns: groups; bars: the group's share of each round's clients; lines: each run's test loss.

    The bars are those of the seed's first run: the study's configs share their clients and participation
    rate, so every run of a seed drew the same cohorts (the table gives each run's own last cohort).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({o.cfg.seed for o, _ in runs})
    groups = runs[0][0].cfg.group_names
    fig, axes = plt.subplots(len(seeds), len(groups), figsize=(5.5 * len(groups), 3.2 * len(seeds)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, seed in enumerate(seeds):
        of_seed = [(o, rec) for o, rec in runs if o.cfg.seed == seed]
        shares = group_shares(group_counts(of_seed[0][0].cfg))
        for ax, g in zip(axes[row], groups, strict=True):
            bars = ax.twinx()
            bars.bar(range(1, len(shares[g]) + 1), np.nan_to_num(shares[g]), color="0.85", width=0.9)
            bars.set_ylim(0, 1)
            bars.set_ylabel(f"{g} share of the round's clients", fontsize=8)
            ax.set_zorder(bars.get_zorder() + 1)
            ax.patch.set_visible(False)
            for i, (o, rec) in enumerate(of_seed):
                pts = rec["loss"].get(g, [])
                ax.plot(
                    [p[0] for p in pts], [p[1] for p in pts], color=colors[i % len(colors)], lw=1.1, label=o.cfg.name
                )
            ax.set_title(f"{g}, seed {seed}", fontsize=10)
            ax.set_xlabel("round")
            ax.set_ylabel("test neg. ELBO, nats/image", fontsize=8)
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out
