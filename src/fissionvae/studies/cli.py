"""``fissionvae study ...``: the command line of the ready-made studies.

:func:`register` adds the ``study`` command (with one sub-command per study) to the main
parser's sub-parsers; each sub-command sets ``func`` like every other ``fissionvae`` command.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fissionvae.studies.dugdale import PRESETS, run_dugdale_study


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``study dugdale`` to ``subparsers``; returns the ``study`` parser."""
    p = subparsers.add_parser("study", help="ready-made studies: train the compared runs, evaluate them, write the figure page")
    studies = p.add_subparsers(dest="study", required=True)
    _add_dugdale(studies)
    return p


def _add_dugdale(studies: argparse._SubParsersAction) -> None:
    d = studies.add_parser(
        "dugdale",
        help="Dugdale (2023): conv VAE on MNIST, FedAvg over 4 IID clients vs centralised, Figures 1-4 and a numbers table",
        description="Train (or reuse finished / resume stopped) federated and centralised runs, evaluate both (FID, classifier IS and coverage, NLL) "
        "and write <out>/dugdale.md with Figures 1-4, the numbers and a verdict.",
    )
    d.add_argument("--quick", action="store_true", help="small subset, few rounds: a smoke test in a few minutes (same as --preset quick)")
    d.add_argument("--preset", choices=sorted(PRESETS), help="full (default: the paper's settings), reduced (sized for 2 CPU cores) or quick")
    d.add_argument("--out", type=Path, help="folder of the figure page (default: <runs-dir>/study-dugdale-<preset>)")
    d.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the two runs are found or created (default: runs/)")
    d.add_argument("--data-dir", type=Path, help="folder with mnist/ (else data.dir, $FISSIONVAE_DATA_DIR, the user cache)")
    d.add_argument("--num-samples", type=int, help="generated images per model for FID and classifier scores (default: the preset's; full: as many as test images)")
    d.add_argument("--iw-samples", type=int, help="K of the importance-weighted NLL bound (default: the preset's)")
    d.add_argument("--configs-dir", type=Path, help="folder of the Dugdale configs (default: the repository's configs/dugdale)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_dugdale)


def cmd_dugdale(args: argparse.Namespace) -> int:
    """Run the study and print the page's path and verdict."""
    page = run_dugdale_study(
        args.out, args.runs_dir, args.data_dir, args.quick, args.num_samples, not args.no_progress,
        preset=args.preset, iw_samples=args.iw_samples, configs_dir=args.configs_dir,
    )
    print(json.loads((page.parent / "dugdale.json").read_text())["sentence"])
    print(f"wrote {page}")
    return 0
