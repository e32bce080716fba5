"""The Dugdale comparison without FID, for a machine too loaded to run Inception: NLL verdict, floor, figures 1-3.

Reads a finished federated and centralised run folder, computes on their test images the
reconstruction and KL terms, the negative ELBO with its 1.96 s.e. half-width and the match verdict
(``match_verdict``, tolerance 2%), the mean-image floor and the reconstructed background intensity,
and draws Figures 1-3 of the study (reconstructions, generations, loss curves) into ``--out``.
``fissionvae study dugdale --preset fixed`` gives the full page (FID, classifier scores, t-SNE) when
there is CPU for Inception.

    PYTHONPATH=src python bench/dugdale_without_fid.py runs/dugdale/<centralised> runs/dugdale/<federated> --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fissionvae.api import load_run
from fissionvae.data.federated import load_groups
from fissionvae.evaluation.noise import Measured, match_verdict
from fissionvae.runs import RunDir
from fissionvae.seeding import torch_generator
from fissionvae.studies.common import read_status
from fissionvae.studies.dugdale_figures import FILES, figure_generations, figure_reconstructions
from fissionvae.studies.dugdale_numbers import floor_numbers
from fissionvae.studies.dugdale_presets import LABELS, MODES, StudyRun
from fissionvae.studies.dugdale_verdict import NLL_TOLERANCE
from fissionvae.studies.figures import loss_curve, plot_loss_overlay
from fissionvae.studies.run_noise import neg_elbo_half_width


@torch.no_grad()
def numbers(sr: StudyRun, groups) -> dict:
    x = groups[0].test_images
    gids = torch.zeros(len(x), dtype=torch.int64)
    terms = sr.model.terms(x, gids, torch_generator(sr.cfg.seed, "eval", 10**6))
    recon = sr.model.reconstruct(x, gids)
    status = read_status(sr.run)
    return {
        "run": str(sr.run.path),
        "schedule": sr.schedule(),
        "train_wall_seconds": status.get("wall_seconds"),
        "recon": terms["recon"].mean().item(),
        "kl": terms["kl_prior"].mean().item(),
        "neg_elbo": terms["neg_elbo"].mean().item(),
        "neg_elbo_half_width": neg_elbo_half_width(sr.model, groups, sr.cfg.seed),
        "background": recon[x == 0].mean().item(),
        "test_images": len(x),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("centralized", type=Path)
    ap.add_argument("federated", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = {}
    for mode in MODES:
        model, cfg = load_run(getattr(args, mode))
        runs[mode] = StudyRun(cfg, RunDir(getattr(args, mode)), {}, model)
    groups = load_groups(runs["federated"].cfg, args.data_dir)
    out: dict = {m: numbers(runs[m], groups) for m in MODES}
    out["floor"] = floor_numbers(groups[0])
    c, f = (Measured(out[m]["neg_elbo"], out[m]["neg_elbo_half_width"]) for m in MODES)
    out["neg_elbo_verdict"] = match_verdict(c, f, NLL_TOLERANCE)
    args.out.mkdir(parents=True, exist_ok=True)
    figure_reconstructions(runs, groups[0].test_images, args.out / FILES["reconstructions"])
    figure_generations(runs, args.out / FILES["generations"])
    train_images = len(groups[0].train_images)
    curves = {m: loss_curve(runs[m].run.metrics(), runs[m].epochs_per_round, train_images) for m in MODES}
    plot_loss_overlay({f"{LABELS[m]} ({runs[m].schedule()})": curves[m] for m in MODES}, args.out / FILES["losses"])
    (args.out / "numbers.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
