"""Command-line options that several ``fissionvae`` commands share, each declared once.

One spelling, one default and one help text per option, so ``train``, ``sample``, ``evaluate``
and the studies cannot drift apart. Each function adds one option to an argparse parser;
the help text may say what the option means for that command (``what``), never its default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_DEVICE = "cpu"


def add_runs_dir(p: argparse.ArgumentParser, what: str = "where run folders are found or created") -> None:
    p.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, help=f"{what} (default: runs/)")


def add_data_dir(p: argparse.ArgumentParser, holds: str = "<dataset>/ folders with the IDX files") -> None:
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"folder with {holds} (else the run's or config's data.dir, $FISSIONVAE_DATA_DIR, the user cache)",
    )


def add_device(p: argparse.ArgumentParser, what: str) -> None:
    """``--device``; None when not given, which every command reads as ``cpu`` (see :func:`device_of`)."""
    p.add_argument("--device", help=f"cpu or cuda[:N]: where {what} (default: cpu)")


def device_of(args: argparse.Namespace) -> str:
    return args.device or DEFAULT_DEVICE


def add_num_samples(p: argparse.ArgumentParser, what: str, default: int | None = None, default_text: str = "") -> None:
    """``-n`` / ``--num-samples`` (one option, two spellings)."""
    p.add_argument(
        "-n",
        "--num-samples",
        type=int,
        default=default,
        metavar="N",
        help=f"{what} (default: {default_text or default})",
    )


def add_fid_bootstrap(p: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--fid-bootstrap``: resamples of the generated features for a 95% FID interval (0: none)."""
    p.add_argument(
        "--fid-bootstrap",
        type=int,
        default=default,
        metavar="REPS",
        help=f"bootstrap resamples of {what} for a 95%% interval of the overall FID (0: none; default {default})",
    )


def fid_bootstrap_of(args: argparse.Namespace) -> int:
    if args.fid_bootstrap < 0 or args.fid_bootstrap == 1:
        raise ValueError(f"--fid-bootstrap: 0 (none) or at least 2 resamples, got {args.fid_bootstrap}")
    return int(args.fid_bootstrap)


def add_no_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_overrides(p: argparse.ArgumentParser, what: str = "override a config value, e.g. train.rounds=3") -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=f"{what} (repeatable)"
    )


def add_seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=f"seed of {what} (default: 0)")


def deprecated_alias(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, flag: str, **kwargs) -> None:
    """An old spelling kept working but hidden from ``--help`` (the command prints a note when it is used)."""
    p.add_argument(flag, help=argparse.SUPPRESS, **kwargs)
