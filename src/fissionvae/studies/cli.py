"""``fissionvae study ...``: the command line of the ready-made studies.

:func:`register` adds the ``study`` command (with one sub-command per study) to the main
parser's sub-parsers; each sub-command sets ``func`` like every other ``fissionvae`` command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fissionvae import cli_options as opts
from fissionvae.studies.dugdale import PRESETS, run_dugdale_study
from fissionvae.studies.fission import run_fission_study
from fissionvae.studies.fission_estimate import describe_plan
from fissionvae.studies.fission_options import DATASETS, Scale, StudyOptions
from fissionvae.studies.fission_plan import parse_tables


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``study dugdale`` to ``subparsers``; returns the ``study`` parser."""
    p = subparsers.add_parser(
        "study", help="ready-made studies: train the compared runs, evaluate them, write the figure page"
    )
    studies = p.add_subparsers(dest="study", required=True)
    _add_dugdale(studies)
    _add_fission(studies)
    return p


def _add_dugdale(studies: argparse._SubParsersAction) -> None:
    d = studies.add_parser(
        "dugdale",
        help="Dugdale (2023): conv VAE on MNIST, FedAvg over 4 IID clients vs centralised, Figures 1-4 and a "
        "numbers table",
        description="Train (or reuse finished / resume stopped) federated and centralised runs, evaluate both (FID, "
        "classifier IS and coverage, NLL) "
        "and write <out>/dugdale.md with Figures 1-4, the numbers and a verdict.",
    )
    d.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="full (default: the paper's settings), reduced (sized for 2 CPU cores), fixed (reduced data, no BatchNorm "
        "on the decoder output: our deviation, docs/results/dugdale.md), schedule (the fixed model on Dugdale's own "
        "schedule, 15 rounds x 6 local epochs vs 25 epochs, on 10,000 images) or quick (a smoke test)",
    )
    opts.deprecated_alias(d, "--quick", action="store_true")  # old spelling of --preset quick
    d.add_argument("--out", type=Path, help="folder of the figure page (default: <runs-dir>/study-dugdale-<preset>)")
    opts.add_runs_dir(d, "where the two runs are found or created")
    opts.add_data_dir(d, "mnist/")
    opts.add_num_samples(
        d,
        "generated images per model for FID and classifier scores",
        default_text="the preset's; full: as many as test images",
    )
    d.add_argument("--iw-samples", type=int, help="K of the importance-weighted NLL bound (default: the preset's)")
    d.add_argument(
        "--configs-dir", type=Path, help="folder of the Dugdale configs (default: the repository's configs/dugdale)"
    )
    opts.add_device(d, "training, sampling, NLL and Inception run")
    opts.add_no_progress(d)
    d.set_defaults(func=cmd_dugdale)


def cmd_dugdale(args: argparse.Namespace) -> int:
    """Run the study and print the page's path and verdict."""
    if args.quick:
        _deprecated("--quick", "--preset quick")
    page = run_dugdale_study(
        args.out,
        args.runs_dir,
        args.data_dir,
        args.quick,
        args.num_samples,
        not args.no_progress,
        preset=args.preset,
        iw_samples=args.iw_samples,
        configs_dir=args.configs_dir,
        device=opts.device_of(args),
    )
    print(json.loads((page.parent / "dugdale.json").read_text())["sentence"])
    print(f"wrote {page}")
    return 0


def _add_fission(studies: argparse._SubParsersAction) -> None:
    f = studies.add_parser(
        "fission",
        help="FissionVAE (Hu et al. 2024) on Mixed MNIST: Tables 3, 5, 6, 7 and Figure 10, every run trained, "
        "evaluated and compared with the paper",
        description="Plan the runs the asked tables need, train each (reusing finished runs and resuming interrupted "
        "ones from their last round), "
        "evaluate them (reusing finished evaluations) and write <out>/mixed_mnist.md and .html. Interrupt it at any "
        "time and run the same command again.",
    )
    f.add_argument(
        "--dataset",
        choices=DATASETS,
        default="mixed_mnist",
        help="only mixed_mnist (MNIST + FashionMNIST as two client groups)",
    )
    f.add_argument(
        "--tables",
        help="comma-separated subset of 3,5,6,7,10,noise (10 = Figure 10; noise = the second-seed runs; default: all)",
    )
    f.add_argument(
        "--show",
        metavar="TABLES",
        help="tables also put on the page from what the ledger (or --fallback-scale) already holds; nothing is "
        "trained or evaluated for them, e.g. --tables 3,7 --show 5,6",
    )
    size = f.add_mutually_exclusive_group()
    size.add_argument(
        "--preset",
        metavar="full|FACTOR|tiny",
        help="full (default: the paper's setting); a factor s in (0, 1): reduced preset with round(70 s) "
        "rounds/epochs, round(20,000 s) generated images, K=round(100 s), labelled reduced everywhere; tiny: smoke "
        "preset for tests, 200 images per group, 2 rounds, 20 generated images (numbers mean nothing)",
    )
    opts.deprecated_alias(size, "--scale")  # old spelling of --preset FACTOR
    opts.deprecated_alias(size, "--tiny", action="store_true")  # old spelling of --preset tiny
    opts.add_runs_dir(f, "where run folders are found (reused / resumed) or created")
    f.add_argument(
        "--out",
        type=Path,
        help="folder of the page: <out>/mixed_mnist.md, .html and mixed_mnist/ (default: "
        "<runs-dir>/study-fission-<scale>)",
    )
    opts.add_data_dir(f, "mnist/ and fashion-mnist/")
    opts.add_num_samples(f, "generated images per evaluation", default_text="the preset's; paper: 20,000")
    f.add_argument(
        "--iw-samples", type=int, help="K of the importance-weighted NLL bound (default: the scale's; paper scale: 100)"
    )
    f.add_argument(
        "--test-size",
        type=int,
        help="evaluate against a seeded subset of N test images per group instead of all of them (reduced; the FID "
        "reference and the NLL test set)",
    )
    f.add_argument("--no-fid", action="store_true", help="skip FID (no Inception network; smoke runs)")
    f.add_argument("--inception", help="FID Inception file (default: $FISSIONVAE_INCEPTION, then the cache)")
    opts.add_device(f, "training and evaluation run; run identity does not depend on it")
    opts.add_overrides(
        f,
        "override a value in every run's config, e.g. federation.workers=2 (keys other than "
        "data.dir/threads/workers/device make different runs)",
    )
    f.add_argument(
        "--max-runs",
        type=int,
        help="train (or continue) at most this many unfinished runs in this call (0: none), then evaluate what is "
        "finished and write the page",
    )
    f.add_argument(
        "--only",
        type=lambda text: tuple(n.strip() for n in text.split(",") if n.strip()),
        default=(),
        metavar="RUNS",
        help="comma-separated run names as --plan prints them: train and evaluate only these in this call (the "
        "units that fit a session); the page still shows every table",
    )
    f.add_argument(
        "--max-rounds-per-run",
        type=int,
        help="train each run by at most this many rounds in this call (it resumes next time)",
    )
    f.add_argument("--no-eval", action="store_true", help="train only; the page shows evaluations that already exist")
    f.add_argument(
        "--baseline",
        dest="baselines",
        action="append",
        default=[],
        type=Path,
        metavar="RUN_DIR",
        help="an evaluated run folder of another model (e.g. FedGAN) to add to Table 3 (repeatable)",
    )
    f.add_argument(
        "--fallback-scale",
        help="fill cells not done at this scale from finished, evaluated runs of this reduced scale, e.g. 0.25 "
        "(marked as such on the page)",
    )
    f.add_argument(
        "--plan",
        action="store_true",
        help="print the runs, their state and the time left (the ledger's measured samples/s); train nothing",
    )
    f.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="cores to keep busy: centralised runs and evaluations (one core each) run this many side by side "
        "(default 2; 1 = one after another, same numbers)",
    )
    opts.add_fid_bootstrap(f, 50, "each evaluation's generated features")
    opts.add_no_progress(f)
    f.set_defaults(func=cmd_fission)


def fission_scale(args: argparse.Namespace) -> Scale:
    """The study's scale from ``--preset`` (or the deprecated ``--scale`` / ``--tiny``)."""
    if args.tiny:
        _deprecated("--tiny", "--preset tiny")
        return Scale(tiny=True)
    if args.scale is not None:
        _deprecated("--scale", "--preset FACTOR")
        return Scale.parse(args.scale)
    if args.preset is None or args.preset.strip().lower() == "full":
        return Scale(1.0)
    return Scale.parse(args.preset)


def _deprecated(old: str, new: str) -> None:
    print(f"fissionvae: note: {old} is deprecated; use {new}", file=sys.stderr)


def cmd_fission(args: argparse.Namespace) -> int:
    """Run (or plan) the FissionVAE study and print the page's path."""
    if args.max_runs is not None and args.max_runs < 0:
        raise ValueError(f"--max-runs: must be >= 0 (0: train nothing), got {args.max_runs}")
    for name in ("max_rounds_per_run", "num_samples", "iw_samples", "test_size", "jobs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {value}")
    opts = StudyOptions(
        tables=parse_tables(args.tables),
        show=() if args.show is None else parse_tables(args.show, "--show"),
        scale=fission_scale(args),
        runs_dir=args.runs_dir,
        out=args.out,
        data_dir=args.data_dir,
        num_samples=args.num_samples,
        iw_samples=args.iw_samples,
        test_size=args.test_size,
        fid=not args.no_fid,
        inception=args.inception,
        device=args.device,
        overrides=tuple(args.overrides),
        max_runs=args.max_runs,
        max_rounds_per_run=args.max_rounds_per_run,
        only=args.only,
        evaluate=not args.no_eval,
        baselines=tuple(args.baselines),
        fallback_scale=None if args.fallback_scale is None else Scale.parse(args.fallback_scale),
        progress=not args.no_progress,
        jobs=args.jobs,
        fid_bootstrap=args.fid_bootstrap,
    )
    if args.fid_bootstrap < 0 or args.fid_bootstrap == 1:
        raise ValueError(f"--fid-bootstrap: 0 (none) or at least 2 resamples, got {args.fid_bootstrap}")
    if args.plan:
        print(describe_plan(opts))
        return 0
    page = run_fission_study(opts)
    print(f"wrote {page} and {page.with_suffix('.html')}")
    return 0
