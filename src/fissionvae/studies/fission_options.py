"""Scale presets and the options of ``fissionvae study fission``, and the configs they resolve to.

Scale (:class:`Scale`): ``--scale 1`` (default) is the paper's setting and protocol. ``--scale s``
(0 < s < 1) is a *reduced* preset: the same configs (clients, data, model, local epochs, batch,
lr) with ``round(s * 70)`` rounds and ``round(s * 70)`` centralised epochs (at least 1), and
``round(s * 20,000)`` generated images per evaluation (FID against the full 20,000 test images)
and ``round(s * 100)`` importance samples for the NLL bound. Reduced runs are named
``<config>[-centralized]-reduced-s<s>`` and every page header and cell says "reduced".
``--tiny`` is a smoke preset for tests (200 training images per group over 2 clients each,
2 rounds of 1 local epoch, 40 test images per group, 20 generated images): numbers from it mean
nothing.

:class:`StudyOptions` holds every option and rebuilds the command line that (re)computes the
study (:meth:`StudyOptions.command`), which the page prints beside every unfinished table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fissionvae.config import RunConfig, load_config
from fissionvae.evaluation.options import EvalOptions
from fissionvae.runs import RunDir
from fissionvae.studies.common import load_study_config
from fissionvae.studies.fission_plan import TABLES, EvalSpec, RunSpec

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs" / "mixed_mnist"
DATASETS = ("mixed_mnist",)
PAGE = "mixed_mnist"  # the page's file stem and the folder of its ledger and pictures
PAPER_EVAL_IMAGES = 20_000  # generated images of the paper's protocol (= the two test sets)
PAPER_IW_SAMPLES = 100
DATASET_TRAIN_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000}


# --------------------------------------------------------------------------- scale


@dataclass(frozen=True)
class Scale:
    """The paper's setting (factor 1), a reduced preset (0 < factor < 1) or the tiny smoke preset."""

    factor: float = 1.0
    tiny: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.factor <= 1:
            raise ValueError(f"--preset {self.factor}: must be in (0, 1] (1 = the paper's setting)")
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
        return ["--preset tiny"] if self.tiny else ([] if self.factor == 1 else [f"--preset {self.factor:g}"])

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
    show: tuple[str, ...] = ()  # tables on the page from the ledger / fallback only: never trained or evaluated
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
    only: tuple[str, ...] = ()  # run names (as --plan prints them): this call trains and evaluates these only
    evaluate: bool = True
    baselines: tuple[Path, ...] = ()  # evaluated run folders of other models (FedGAN): extra Table 3 rows
    fallback_scale: Scale | None = None  # fill cells not done at this scale from finished, evaluated runs of that scale
    progress: bool = True
    jobs: int = 2  # cores the scheduler keeps busy (1: one job after another)
    fid_bootstrap: int = 50  # bootstrap resamples of the generated features per evaluation (0: none)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out is not None else Path(self.runs_dir) / f"study-fission-{self.scale.label}"

    @property
    def ledger_path(self) -> Path:
        """The results ledger: ``<out>/mixed_mnist/study.json``."""
        return self.out_dir / PAGE / "study.json"

    def command(self) -> str:
        """The command line that (re)computes this study (what a pending cell needs)."""
        args = ["fissionvae study fission --dataset mixed_mnist"]
        if tuple(self.tables) != TABLES:
            args.append(f"--tables {','.join(self.tables)}")
        shown = [t for t in self.show if t not in self.tables]
        args += [f"--show {','.join(shown)}"] if shown else []
        args += self.scale.cli_args()
        args += [] if str(self.runs_dir) == "runs" else [f"--runs-dir {self.runs_dir}"]
        args += [] if self.data_dir is None else [f"--data-dir {self.data_dir}"]
        args += [] if self.out is None else [f"--out {self.out}"]
        args += [] if self.num_samples is None else [f"--num-samples {self.num_samples}"]
        args += [] if self.iw_samples is None else [f"--iw-samples {self.iw_samples}"]
        args += [] if self.test_size is None else [f"--test-size {self.test_size}"]
        args += [] if self.fid else ["--no-fid"]
        args += [] if self.device is None else [f"--device {self.device}"]
        args += [f"--set {o}" for o in self.overrides]
        args += [f"--baseline {b}" for b in self.baselines]
        args += [] if self.fallback_scale is None else [f"--fallback-scale {self.fallback_scale.cli_value()}"]
        args += [] if self.jobs == 2 else [f"--jobs {self.jobs}"]
        args += [] if self.fid_bootstrap == 50 else [f"--fid-bootstrap {self.fid_bootstrap}"]
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
    seed = "" if spec.seed is None else f"-seed{spec.seed}"
    name = f"{spec.config}{'-centralized' if spec.mode == 'centralized' else ''}{seed}{scale.suffix}"
    extra = [f"mode={spec.mode}", f"name={name}", *scale.overrides(base), *overrides]
    extra += [] if spec.seed is None else [f"seed={spec.seed}"]
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
        fid_bootstrap=opts.fid_bootstrap if opts.fid else 0,
        device="cpu" if opts.device is None else opts.device,
    )


def planned_sample_passes(cfg: RunConfig) -> float:
    """Expected training images processed (sample passes) by a run of ``cfg``."""
    images = sum(g.train_size or DATASET_TRAIN_IMAGES[g.dataset] for g in cfg.data.groups)
    if cfg.mode == "centralized":
        return float(cfg.train.centralized_epochs * images)
    return float(cfg.train.rounds * cfg.train.local_epochs * cfg.federation.participation * images)


def count_passes(run: RunDir, cfg: RunConfig) -> int:
    """Training images processed by a run so far (client updates x local epochs)."""
    epochs = 1 if cfg.mode == "centralized" else cfg.train.local_epochs
    return sum(m["num_samples"] * epochs for m in run.metrics() if m.get("type") == "client")
