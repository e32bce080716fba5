"""The FissionVAE study on Mixed MNIST: Tables 3, 5, 6, 7 and Figure 10 of Hu et al. (2024).

``fissionvae study fission --dataset mixed_mnist`` (:func:`run_fission_study`) plans the runs the
asked tables need (:func:`make_plan`), trains each one (or reuses a finished one, or resumes an
interrupted one from its last round: :mod:`fissionvae.studies.common`), evaluates them (or reuses
a matching evaluation) and writes one page (:mod:`fissionvae.studies.fission_page`).

Runs are identified by content: a run folder under ``--runs-dir`` is reused when its saved config
equals the wanted one (apart from where data live, threads, workers and device), so tables share
runs: Table 5's "+L+D identical" *is* Table 3's FissionVAE+D (``fission_d.yaml``), its "+L+D
wave" is Table 3's +L+D, "+H+L+D learnable" is Table 3's +H+L+D and Table 6's homogeneous row,
and Table 7 and Figure 10 only evaluate Table 5's "+H+L+D wave" run in other ways.

Evaluations are identified by their options and the run's weights: the default pathway goes to
``<run>/eval.json`` (what ``fissionvae report`` reads), Table 7's other pathways and the prior
swap to ``<run>/eval-<pathway>[-swap].json``; each is reused when it matches.

Scale (:class:`Scale`): ``--scale 1`` (default) is the paper's setting and protocol. ``--scale s``
(0 < s < 1) is a *reduced* preset: the same configs (clients, data, model, local epochs, batch,
lr) with ``round(s * 70)`` rounds and ``round(s * 70)`` centralised epochs (at least 1), and
``round(s * 20,000)`` generated images per evaluation (FID against the full 20,000 test images)
and ``round(s * 100)`` importance samples for the NLL bound. Reduced runs are named
``<config>[-centralized]-reduced-s<s>`` and every page header and cell says "reduced".
``--tiny`` is a smoke preset for tests (200 training images per group over 2 clients each,
2 rounds of 1 local epoch, 40 test images per group, 20 generated images): numbers from it mean
nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from fissionvae.config import RunConfig, load_config
from fissionvae.evaluation.evaluate import EvalOptions
from fissionvae.evaluation.report import PAPER_TABLE3, PAPER_TABLE5
from fissionvae.runs import RunDir
from fissionvae.studies.common import (
    ensure_evaluated,
    ensure_trained,
    eval_matches,
    load_study_config,
    matching_runs,
    read_status,
)

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs" / "mixed_mnist"
DATASETS = ("mixed_mnist",)
TABLES = ("3", "5", "6", "7", "10")  # "10" is Figure 10
PAPER_EVAL_IMAGES = 20_000  # generated images of the paper's protocol (= the two test sets)
PAPER_IW_SAMPLES = 100
DATASET_TRAIN_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000}
FID_IMAGES_PER_CPU_SECOND = 6.0  # FID Inception on one core of the 2-core dev machine (docs/benchmarks.md)

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
PAPER_FEDGAN = {"federated": (118.52, 2.39, None), "centralized": (91.08, 3.18, None)}


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class RunSpec:
    """One training run: a config of ``configs/mixed_mnist/`` in one mode."""

    config: str  # file stem, e.g. "fission_ld"
    mode: str = "federated"

    @property
    def key(self) -> str:
        return f"{self.config}/{self.mode}"


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
    paper: dict[str, tuple] = field(default_factory=dict)


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


BUILDERS = {"3": table3, "5": table5, "6": table6, "7": table7, "10": figure10}


def parse_tables(text: str | None) -> tuple[str, ...]:
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
            f"--tables {text!r}: unknown table(s) {unknown}; choose from {', '.join(TABLES)} (10 = Figure 10) or 'all'"
        )
    return tuple(t for t in TABLES if t in asked)


def make_plan(tables: tuple[str, ...] | list[str] = TABLES) -> Plan:
    """The tables (in the paper's order) with the runs and evaluations each cell needs."""
    return Plan([BUILDERS[t]() for t in TABLES if t in tables])


# --------------------------------------------------------------------------- scale


@dataclass(frozen=True)
class Scale:
    """The paper's setting (factor 1), a reduced preset (0 < factor < 1) or the tiny smoke preset."""

    factor: float = 1.0
    tiny: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.factor <= 1:
            raise ValueError(f"--scale {self.factor}: must be in (0, 1] (1 = the paper's setting)")
        if self.tiny and self.factor != 1:
            raise ValueError("--tiny and --scale exclude each other")

    @property
    def reduced(self) -> bool:
        return self.tiny or self.factor < 1

    @property
    def label(self) -> str:
        return "tiny" if self.tiny else ("full" if self.factor == 1 else f"reduced-s{self.factor:g}")

    @property
    def suffix(self) -> str:
        """Appended to run names: "" at full scale."""
        return "" if self.label == "full" else f"-{self.label}"

    def cli_args(self) -> list[str]:
        return ["--tiny"] if self.tiny else ([] if self.factor == 1 else [f"--scale {self.factor:g}"])

    def cli_value(self) -> str:
        """How ``--fallback-scale`` names this scale."""
        return "tiny" if self.tiny else f"{self.factor:g}"

    @classmethod
    def parse(cls, text: str) -> Scale:
        """``"tiny"`` or a factor in (0, 1]."""
        if text.strip().lower() == "tiny":
            return cls(tiny=True)
        try:
            return cls(float(text))
        except ValueError:
            raise ValueError(f"scale {text!r}: expected a number in (0, 1] or 'tiny'") from None

    def count(self, n: int) -> int:
        """``n`` rounds / epochs at this scale (at least 1)."""
        return 2 if self.tiny else max(1, round(n * self.factor))

    def num_samples(self) -> int | None:
        """Generated images per evaluation (None: as many as test images, the paper's protocol)."""
        if self.tiny:
            return 20
        return None if self.factor == 1 else max(2, round(PAPER_EVAL_IMAGES * self.factor))

    def iw_samples(self) -> int:
        return 2 if self.tiny else max(1, round(PAPER_IW_SAMPLES * self.factor))

    def overrides(self, cfg: RunConfig) -> list[str]:
        """``--set`` overrides that turn a paper-setting config into this scale's."""
        if self.label == "full":
            return []
        out = [
            f"train.rounds={self.count(cfg.train.rounds)}",
            f"train.centralized_epochs={self.count(cfg.train.centralized_epochs)}",
        ]
        if self.tiny:
            out += ["train.local_epochs=1", "eval.test_per_group=40", "eval.grid_size=16", "eval.recon_per_group=4"]
            for i in range(len(cfg.data.groups)):
                out += [
                    f"data.groups.{i}.clients=2",
                    f"data.groups.{i}.train_size=200",
                    f"data.groups.{i}.test_size=40",
                ]
        return out


# --------------------------------------------------------------------------- options


@dataclass
class StudyOptions:
    """Everything ``fissionvae study fission`` takes (see :func:`run_fission_study`)."""

    tables: tuple[str, ...] = TABLES
    scale: Scale = field(default_factory=Scale)
    runs_dir: Path = Path("runs")
    out: Path | None = None  # default: <runs_dir>/study-fission-<scale label>
    data_dir: Path | None = None
    configs_dir: Path = CONFIGS_DIR
    num_samples: int | None = None  # None: the scale's
    iw_samples: int | None = None  # None: the scale's
    test_size: int | None = None  # None: every test image; N: a seeded subset of N per group (reduced)
    fid: bool = True
    inception: str | None = None
    device: str | None = None  # None: the configs' (cpu)
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE for every run (changes identity unless it is an ignored key)
    max_runs: int | None = None  # train (or continue) at most this many unfinished runs in this call
    max_rounds_per_run: int | None = None  # and each by at most this many rounds
    evaluate: bool = True
    baselines: tuple[Path, ...] = ()  # evaluated run folders of other models (FedGAN): extra Table 3 rows
    fallback_scale: Scale | None = None  # fill cells not done at this scale from finished, evaluated runs of that scale
    progress: bool = True

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.runs_dir) / f"study-fission-{self.scale.label}"

    def command(self) -> str:
        """The command line that (re)computes this study (what a pending cell needs)."""
        args = ["fissionvae study fission --dataset mixed_mnist"]
        if tuple(self.tables) != TABLES:
            args.append(f"--tables {','.join(self.tables)}")
        args += self.scale.cli_args()
        args += [] if str(self.runs_dir) == "runs" else [f"--runs-dir {self.runs_dir}"]
        args += [] if self.out is None else [f"--out {self.out}"]
        args += [] if self.num_samples is None else [f"--num-samples {self.num_samples}"]
        args += [] if self.iw_samples is None else [f"--iw-samples {self.iw_samples}"]
        args += [] if self.test_size is None else [f"--test-size {self.test_size}"]
        args += [] if self.fid else ["--no-fid"]
        args += [] if self.device is None else [f"--device {self.device}"]
        args += [f"--set {o}" for o in self.overrides]
        args += [f"--baseline {b}" for b in self.baselines]
        args += [] if self.fallback_scale is None else [f"--fallback-scale {self.fallback_scale.cli_value()}"]
        return " ".join(args)


def resolve_config(
    spec: RunSpec,
    scale: Scale,
    configs_dir: Path = CONFIGS_DIR,
    overrides: tuple[str, ...] | list[str] = (),
    device: str | None = None,
) -> RunConfig:
    """The run config of ``spec`` at ``scale``: the config file, its mode, the scale's sizes, a scale-labelled name."""
    path = Path(configs_dir) / f"{spec.config}.yaml"
    base = load_study_config(path)
    name = f"{spec.config}{'-centralized' if spec.mode == 'centralized' else ''}{scale.suffix}"
    extra = [f"mode={spec.mode}", f"name={name}", *scale.overrides(base), *overrides]
    extra += [] if device is None else [f"train.device={device}"]
    return load_config(path, extra)


def eval_options(ev: EvalSpec, opts: StudyOptions, scale: Scale | None = None) -> EvalOptions:
    """The evaluation options of one cell (sample counts from the scale unless given)."""
    scale = scale or opts.scale
    primary = scale == opts.scale
    return EvalOptions(
        num_samples=opts.num_samples if (primary and opts.num_samples is not None) else scale.num_samples(),
        iw_samples=opts.iw_samples if (primary and opts.iw_samples is not None) else scale.iw_samples(),
        test_size=opts.test_size,
        pathway=ev.pathway,
        prior_swap=ev.prior_swap,
        result_name=ev.result_name,
        fid=opts.fid,
        inception=opts.inception,
        tsne=False,
        data_dir=None if opts.data_dir is None else str(opts.data_dir),
        progress=opts.progress,
        **({} if opts.device is None else {"device": opts.device}),
    )


def planned_sample_passes(cfg: RunConfig) -> float:
    """Expected training images processed (sample passes) by a run of ``cfg``."""
    images = sum(g.train_size or DATASET_TRAIN_IMAGES[g.dataset] for g in cfg.data.groups)
    if cfg.mode == "centralized":
        return float(cfg.train.centralized_epochs * images)
    return float(cfg.train.rounds * cfg.train.local_epochs * cfg.federation.participation * images)


# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    """What the study has for one evaluation cell: the run (maybe unfinished or absent) and its result."""

    spec: EvalSpec
    cfg: RunConfig
    run: RunDir | None = None
    status: dict | None = None
    result: dict | None = None  # the eval json, None while pending
    scale: Scale = field(default_factory=Scale)  # where the result came from (the study's or the fallback scale)

    @property
    def done(self) -> bool:
        return self.result is not None


def _finished(status: dict | None) -> bool:
    return bool(status) and status.get("state") == "finished"


def existing_run(cfg: RunConfig, runs_dir: Path) -> tuple[RunDir | None, dict | None]:
    """The best matching run folder of ``cfg`` and its status (None, None when there is none)."""
    matches = matching_runs(runs_dir, cfg)
    return matches[0] if matches else (None, None)


def lookup_result(run: RunDir | None, status: dict | None, eopts: EvalOptions) -> dict | None:
    """A saved evaluation of a finished run answering ``eopts``, or None (nothing is computed)."""
    if run is None or not _finished(status):
        return None
    path = run.path / f"{eopts.result_name}.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if eval_matches(result, run, eopts) else None


def train_run(
    spec: RunSpec, cfg: RunConfig, opts: StudyOptions, may_train: bool
) -> tuple[RunDir | None, dict | None, bool]:
    """The run of ``cfg``: reused when finished, else trained or resumed when ``may_train``.

    Returns (folder or None, its status or None, whether this call trained it).
    """
    run, status = existing_run(cfg, opts.runs_dir)
    if _finished(status) or not may_train:
        return run, status, False
    run = ensure_trained(cfg, opts.runs_dir, opts.data_dir, opts.progress, max_rounds=opts.max_rounds_per_run)
    return run, read_status(run), True


def evaluate_cell(ev: EvalSpec, cfg: RunConfig, run: RunDir | None, status: dict | None, opts: StudyOptions) -> Outcome:
    """One cell: evaluated (or its evaluation reused) when the run is finished, else pending."""
    outcome = Outcome(ev, cfg, run, status, scale=opts.scale)
    if _finished(status):
        eopts = eval_options(ev, opts)
        outcome.result = ensure_evaluated(run, eopts) if opts.evaluate else lookup_result(run, status, eopts)
    return outcome


def train_and_evaluate(
    plan: Plan, cfgs: dict[RunSpec, RunConfig], opts: StudyOptions, bar: tqdm
) -> dict[EvalSpec, Outcome]:
    """Each run in table order: trained (within ``max_runs``), then its cells evaluated; returns every cell."""
    outcomes, started = {}, 0
    for spec in plan.runs:
        cfg = cfgs[spec]
        bar.set_postfix_str(f"run {cfg.name}")
        run, status, trained = train_run(spec, cfg, opts, opts.max_runs is None or started < opts.max_runs)
        started += trained
        bar.update()
        for ev in plan.evals_of(spec):
            bar.set_postfix_str(f"evaluating {cfg.name} ({ev.result_name})")
            outcomes[ev] = evaluate_cell(ev, cfg, run, status, opts)
            bar.update()
    return {ev: outcomes[ev] for ev in plan.evals}


def fill_from_fallback(plan: Plan, outcomes: dict[EvalSpec, Outcome], opts: StudyOptions) -> None:
    """Cells still pending take the finished, evaluated result of ``opts.fallback_scale`` if there is one."""
    scale = opts.fallback_scale
    if scale is None or scale == opts.scale:
        return
    for ev, o in outcomes.items():
        if o.done:
            continue
        cfg = resolve_config(ev.run, scale, opts.configs_dir, opts.overrides, opts.device)
        run, status = existing_run(cfg, opts.runs_dir)
        result = lookup_result(run, status, eval_options(ev, opts, scale))
        if result is not None:
            outcomes[ev] = Outcome(ev, cfg, run, status, result, scale)


def run_fission_study(opts: StudyOptions) -> Path:
    """Train, evaluate and write the page of the asked tables; return the page's path.

    Every config is resolved and validated before anything trains. Runs train in table order,
    each evaluated as soon as it is finished. ``opts.max_runs`` and ``opts.max_rounds_per_run``
    bound the training of this call; the page then marks the cells still pending, and rerunning
    the same command continues where the last call stopped.
    """
    from fissionvae.studies.fission_page import write_page

    start = time.perf_counter()
    plan = make_plan(opts.tables)
    cfgs = {spec: resolve_config(spec, opts.scale, opts.configs_dir, opts.overrides, opts.device) for spec in plan.runs}
    with tqdm(
        total=len(plan.runs) + len(plan.evals) + 1,
        desc=f"fission study ({opts.scale.label})",
        unit="step",
        disable=not opts.progress,
    ) as bar:
        outcomes = train_and_evaluate(plan, cfgs, opts, bar)
        fill_from_fallback(plan, outcomes, opts)
        bar.set_postfix_str("page")
        page = write_page(plan, outcomes, opts, time.perf_counter() - start)
        bar.update()
    return page


def describe_plan(opts: StudyOptions, samples_per_second: float = 5000.0) -> str:
    """A text table of the plan: each run, its tables, state, planned sample passes and time at the given rate."""
    plan = make_plan(opts.tables)
    lines = [f"{'run':<44} {'tables':<10} {'state':<22} {'sample passes':>14} {'hours':>6}"]
    total = 0.0
    for spec in plan.runs:
        cfg = resolve_config(spec, opts.scale, opts.configs_dir, opts.overrides, opts.device)
        run, status = existing_run(cfg, opts.runs_dir)
        state = "new" if run is None else f"{status.get('state')} {status.get('rounds_done', 0)}/{cfg.effective_rounds}"
        passes = planned_sample_passes(cfg)
        left = passes * (1 - (status or {}).get("rounds_done", 0) / cfg.effective_rounds)
        total += left
        lines.append(
            f"{cfg.name:<44} {','.join(plan.tables_of(spec)):<10} {state:<22} {passes:>14,.0f} {left / samples_per_second / 3600:>6.2f}"
        )
    n_eval = len(plan.evals)
    gen = opts.num_samples or opts.scale.num_samples() or PAPER_EVAL_IMAGES
    lines.append(
        f"{len(plan.runs)} runs; training left: {total:,.0f} sample passes = {total / samples_per_second / 3600:.1f} h at {samples_per_second:,.0f} samples/s"
    )
    fid_images = n_eval * gen
    lines.append(
        f"{n_eval} evaluations x {gen:,} generated images = {fid_images:,} images through the FID Inception (plus {PAPER_EVAL_IMAGES:,} test images once, cached): "
        f"{fid_images / FID_IMAGES_PER_CPU_SECOND / 3600:.1f} h of one CPU core at {FID_IMAGES_PER_CPU_SECOND:g} images/s (docs/benchmarks.md)"
        if opts.fid
        else f"{n_eval} evaluations, no FID"
    )
    return "\n".join(lines)


def count_passes(run: RunDir, cfg: RunConfig) -> int:
    """Training images processed by a run so far (client updates x local epochs)."""
    epochs = 1 if cfg.mode == "centralized" else cfg.train.local_epochs
    return sum(m["num_samples"] * epochs for m in run.metrics() if m.get("type") == "client")
