"""The plan of the FissionVAE study: which runs and evaluations each table of Hu et al. (2024) needs.

A :class:`Plan` is a list of :class:`TableSpec` (the paper's Tables 3, 5, 6, 7, Figure 10, and
the study's own noise table), each a list of :class:`Row` whose cells are :class:`EvalSpec`
(an evaluation of a :class:`RunSpec`). Tables share runs: Table 5's "+L+D identical" *is*
Table 3's FissionVAE+D, and Table 7 and Figure 10 evaluate Table 5's "+H+L+D wave" run in other
ways. The paper's numbers live here beside the cells they belong to.

The noise table holds the runs that measure the seed-to-seed spread of FID (FedVAE and +L+D,
federated, trained again with seed :data:`NOISE_SEED`); the verdicts on the page use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fissionvae.evaluation.report import PAPER_TABLE3, PAPER_TABLE5

TABLES = ("3", "5", "6", "7", "10", "noise")  # "10" is Figure 10; "noise" the second-seed runs
NOISE_SEED = 1  # the configs use seed 0; the noise runs repeat two of them with this seed
SECOND_SEED = "second seed"  # column of the noise table

# Table 1 names of the shipped configs (configs/mixed_mnist/<stem>.yaml)
FAMILY = {
    "fedvae": "FedVAE",
    "fission_l": "FissionVAE+L",
    "fission_d": "FissionVAE+D",
    "fission_ld": "FissionVAE+L+D",
    "fission_hld": "FissionVAE+H+L+D",
    "fission_hld_learnable": "FissionVAE+H+L+D",
}
# (model, prior) -> config stem of Table 5; "+L+D identical" is FissionVAE+D
TABLE5_CONFIGS = {
    ("FissionVAE+L+D", "identical"): "fission_d",
    ("FissionVAE+L+D", "one-hot"): "fission_ld_onehot",
    ("FissionVAE+L+D", "symmetrical"): "fission_ld_symmetrical",
    ("FissionVAE+L+D", "random"): "fission_ld_random",
    ("FissionVAE+L+D", "wave"): "fission_ld",
    ("FissionVAE+H+L+D", "identical"): "fission_hld_identical",
    ("FissionVAE+H+L+D", "one-hot"): "fission_hld_onehot",
    ("FissionVAE+H+L+D", "symmetrical"): "fission_hld_symmetrical",
    ("FissionVAE+H+L+D", "random"): "fission_hld_random",
    ("FissionVAE+H+L+D", "wave"): "fission_hld",
    ("FissionVAE+H+L+D", "learnable"): "fission_hld_learnable",
}
# Table 6 (Mixed MNIST, federated, +H+L+D learnable): FashionMNIST branch -> (config, {part: (FID, IS, NLL)})
PAPER_TABLE6 = {
    "homogeneous (3-layer MLPs)": (
        "fission_hld_learnable",
        {"mnist": (46.73, 2.41, 0.38), "fashion": (61.81, 2.92, 0.61), "overall": (47.72, 2.98, 0.30)},
    ),
    "deeper MLP (+2 layers in p(z1|z2) and p(x|z1))": (
        "fission_hld_fashion_deep",
        {"mnist": (49.54, 2.38, 0.33), "fashion": (60.95, 2.90, 0.78), "overall": (48.79, 2.95, 0.39)},
    ),
    "deeper MLP + conv p(x|z1)": (
        "fission_hld_fashion_deepconv",
        {"mnist": (48.21, 2.38, 0.38), "fashion": (65.82, 2.99, 0.60), "overall": (50.16, 3.00, 0.30)},
    ),
}
# Table 7 (+H+L+D wave, federated): pathway (None = the default z2) -> (label, (FID, IS))
PAPER_TABLE7 = {
    "z1-z2-z1": ("z1 ~ p_g(z1) -> q(z2|z1) -> p(z1|z2) -> p(x|z1)", (93.79, 2.43)),
    "z1": ("z1 ~ p_g(z1) -> p(x|z1)", (124.76, 2.41)),
    None: ("z2 ~ N(0, I) -> p(z1|z2) -> p(x|z1) (default)", (53.68, 2.94)),
}
# Table 3's FedGAN (DCGAN) row: (FID, IS, NLL) per mode; shown beside --baseline runs named *gan*
PAPER_FEDGAN: dict[str, tuple[float, float, float | None]] = {
    "federated": (118.52, 2.39, None),
    "centralized": (91.08, 3.18, None),
}


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class RunSpec:
    """One training run: a config of ``configs/mixed_mnist/`` in one mode."""

    config: str  # file stem, e.g. "fission_ld"
    mode: str = "federated"
    seed: int | None = None  # None: the config's seed; else a noise run with this seed

    @property
    def key(self) -> str:
        return f"{self.config}/{self.mode}" + ("" if self.seed is None else f"/seed{self.seed}")


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation of a run: a generation pathway (None: the model's default), optionally with swapped priors."""

    run: RunSpec
    pathway: str | None = None
    prior_swap: bool = False

    @property
    def result_name(self) -> str:
        """File stem of the result in the run folder: ``eval`` for the default evaluation."""
        if self.pathway is None and not self.prior_swap:
            return "eval"
        return "eval-" + (self.pathway or "default") + ("-swap" if self.prior_swap else "")

    @property
    def key(self) -> str:
        return f"{self.run.key}/{self.result_name}"


@dataclass
class Row:
    """One row of a table: column group (e.g. "federated") -> the evaluation in that cell, and the paper's numbers."""

    label: str
    evals: dict[str, EvalSpec]
    paper: dict[str, Any] = field(default_factory=dict)  # (FID, IS, NLL); Table 6: part -> (FID, IS, NLL)


@dataclass
class TableSpec:
    key: str  # "3", "5", "6", "7", "10"
    title: str
    columns: tuple[str, ...]  # column groups of every row
    rows: list[Row]


@dataclass
class Plan:
    tables: list[TableSpec]

    @property
    def evals(self) -> list[EvalSpec]:
        """Every evaluation the tables need, each once, in table order."""
        return list(dict.fromkeys(ev for t in self.tables for r in t.rows for ev in r.evals.values()))

    @property
    def runs(self) -> list[RunSpec]:
        """Every run the tables need, each once, in table order."""
        return list(dict.fromkeys(ev.run for ev in self.evals))

    def evals_of(self, run: RunSpec) -> list[EvalSpec]:
        return [ev for ev in self.evals if ev.run == run]

    def tables_of(self, run: RunSpec) -> list[str]:
        return [t.key for t in self.tables if any(ev.run == run for r in t.rows for ev in r.evals.values())]


def table3() -> TableSpec:
    """FedVAE, +L, +D, +L+D (wave), +H+L+D (learnable), each federated and centralised."""
    rows = []
    for stem, label in (
        ("fedvae", "FedVAE"),
        ("fission_l", "FissionVAE+L (wave)"),
        ("fission_d", "FissionVAE+D"),
        ("fission_ld", "FissionVAE+L+D (wave)"),
        ("fission_hld_learnable", "FissionVAE+H+L+D (learnable)"),
    ):
        modes = ("federated", "centralized")
        rows.append(
            Row(
                label, {m: EvalSpec(RunSpec(stem, m)) for m in modes}, {m: PAPER_TABLE3[FAMILY[stem]][m] for m in modes}
            )
        )
    return TableSpec(
        "3", "Table 3: federated and centralised generation, Mixed MNIST", ("federated", "centralized"), rows
    )


def table5() -> TableSpec:
    """+L+D with five z1 priors, +H+L+D with the five and learnable, federated."""
    rows = [
        Row(
            f"{model[len('FissionVAE') :]} {prior}",
            {"federated": EvalSpec(RunSpec(stem))},
            {"federated": PAPER_TABLE5[(model, prior)]},
        )
        for (model, prior), stem in TABLE5_CONFIGS.items()
    ]
    return TableSpec("5", "Table 5: z1 prior strategies, federated, Mixed MNIST", ("federated",), rows)


def table6() -> TableSpec:
    """+H+L+D (learnable) with the FashionMNIST branch homogeneous, deeper, deeper + conv, federated."""
    rows = [
        Row(label, {"federated": EvalSpec(RunSpec(stem))}, {"federated": paper})
        for label, (stem, paper) in PAPER_TABLE6.items()
    ]
    return TableSpec(
        "6",
        "Table 6: heterogeneous decoder branches (FashionMNIST branch), +H+L+D, federated, Mixed MNIST",
        ("federated",),
        rows,
    )


def table7() -> TableSpec:
    """The three generation pathways of +H+L+D (wave), federated: evaluations of one run."""
    run = RunSpec("fission_hld")
    rows = [
        Row(label, {"federated": EvalSpec(run, pathway)}, {"federated": paper})
        for pathway, (label, paper) in PAPER_TABLE7.items()
    ]
    return TableSpec(
        "7", "Table 7: generation pathways of FissionVAE+H+L+D (wave), federated, Mixed MNIST", ("federated",), rows
    )


def figure10() -> TableSpec:
    """Pathway 1 of +H+L+D (wave) with each group's own prior and with the two priors swapped."""
    run = RunSpec("fission_hld")
    rows = [
        Row("pathway 1, each group's own prior", {"federated": EvalSpec(run, "z1-z2-z1")}),
        Row("pathway 1, the two groups' priors swapped", {"federated": EvalSpec(run, "z1-z2-z1", prior_swap=True)}),
    ]
    return TableSpec(
        "10", "Figure 10: swapping the groups' z1 priors (pathway 1), +H+L+D (wave), federated", ("federated",), rows
    )


def noise_table() -> TableSpec:
    """The noise runs: FedVAE and +L+D (wave) federated with the config's seed and with :data:`NOISE_SEED`."""
    rows = [
        Row(label, {"federated": EvalSpec(RunSpec(stem)), SECOND_SEED: EvalSpec(RunSpec(stem, seed=NOISE_SEED))})
        for stem, label in (("fedvae", "FedVAE"), ("fission_ld", "FissionVAE+L+D (wave)"))
    ]
    return TableSpec(
        "noise", "Noise: FID across two training seeds, federated, Mixed MNIST", ("federated", SECOND_SEED), rows
    )


BUILDERS = {"3": table3, "5": table5, "6": table6, "7": table7, "10": figure10, "noise": noise_table}


def parse_tables(text: str | None, option: str = "--tables") -> tuple[str, ...]:
    """``"3,7"`` -> ("3", "7") in the paper's order; None or "all" -> every table."""
    if text is None or text.strip().lower() == "all":
        return TABLES
    asked = {
        t.strip().lower().removeprefix("table").removeprefix("figure").removeprefix("fig").strip()
        for t in text.split(",")
        if t.strip()
    }
    unknown = sorted(asked - set(TABLES))
    if unknown or not asked:
        raise ValueError(
            f"{option} {text!r}: unknown table(s) {unknown}; choose from {', '.join(TABLES)} (10 = Figure 10) or 'all'"
        )
    return tuple(t for t in TABLES if t in asked)


def make_plan(tables: tuple[str, ...] | list[str] = TABLES) -> Plan:
    """The tables (in the paper's order) with the runs and evaluations each cell needs."""
    return Plan([BUILDERS[t]() for t in TABLES if t in tables])
