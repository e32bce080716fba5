"""Numbers of docs/results/rgb.md that ``evaluate`` does not print, from evaluated stand-in run folders.

Per run (no ``evaluate`` needed): the negative ELBO in bits/dim on the test images, the last round's
test KL share of the loss, the learned global std against its closed-form optimum, the
near-duplicate share of its generations; for DLML runs also the near-duplicate share of the same
model's generations drawn as the mixture mean (the old behaviour). Then the floor, the per-pixel
Gaussian of each group (bits/dim on its test images). With ``--fid``: FID with a bootstrap 95%
half-width for each, and the verdicts of the ordering claims (``ordering_verdict``).

    PYTHONPATH=src python bench/rgb_standin_numbers.py runs/rgb/fed-* --data-dir ../shared/data [--fid]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from fissionvae.api import load_run
from fissionvae.data.federated import load_groups
from fissionvae.evaluation.collapse import near_duplicates
from fissionvae.evaluation.evaluate import generate, pooled_stats, to_uint8
from fissionvae.evaluation.feature_cache import reference_stats
from fissionvae.evaluation.fid import feature_stats, fid_from_stats
from fissionvae.evaluation.floor import FloorModel
from fissionvae.evaluation.noise import Measured, bootstrap_fid, half_width, ordering_verdict
from fissionvae.evaluation.runtimes import feature_extractor
from fissionvae.seeding import torch_generator

FLOOR_SAMPLES = 100  # per group


BOOTSTRAP_REPS = 200  # as `fissionvae evaluate --fid-bootstrap 200` (about 0.15 s a replicate at 500 samples)


def real_stats(groups, extractor):
    """Each group's test-image statistics (computed once, then cached by content and extractor)."""
    return [reference_stats(g, extractor) for g in groups]


def fid_of(samples: list[torch.Tensor], real, extractor) -> Measured:
    feats = np.concatenate([extractor(s) for s in samples]).astype(np.float64)
    ref = pooled_stats(real)
    return Measured(
        fid_from_stats(feature_stats(feats), ref), half_width(bootstrap_fid(feats, ref, reps=BOOTSTRAP_REPS))
    )


@torch.no_grad()
def optimum_std(model, groups, seed: int) -> float:
    """sqrt of the mean squared error (on the [-1, 1] scale) of the decoder means at z ~ q(z|x), test images."""
    g = torch_generator(seed, "eval", 10**6)
    se, n = 0.0, 0
    for gi, grp in enumerate(groups):
        x = grp.test_images
        z = model.encode(x).rsample(g)
        params = model.branches[model.branch_index(gi)].image_params(z)
        se += (x * 2 - 1 - params).pow(2).sum().item()
        n += x.numel()
    return math.sqrt(se / n)


@torch.no_grad()
def neg_elbo_bpd(model, groups, seed: int) -> float:
    """Mean negative ELBO over every group's test images, bits/dim (one z per image)."""
    g = torch_generator(seed, "eval", 10**6)
    total, n = 0.0, 0
    for gi, grp in enumerate(groups):
        x = grp.test_images
        total += model.terms(x, torch.full((len(x),), gi, dtype=torch.int64), g)["neg_elbo"].sum().item()
        n += len(x)
    return total / n / math.prod(groups[0].test_images.shape[1:]) / math.log(2)


@torch.no_grad()
def per_image_neg_elbo(path: Path, data_dir: str | None) -> torch.Tensor:
    """Per-image negative ELBO (nats) on every group's test images, the evaluation's seeded z draws."""
    model, cfg = load_run(path)
    g = torch_generator(cfg.seed, "eval", 10**6)
    groups = load_groups(cfg, data_dir)
    return torch.cat(
        [
            model.terms(grp.test_images, torch.full((len(grp.test_images),), gi, dtype=torch.int64), g)["neg_elbo"]
            for gi, grp in enumerate(groups)
        ]
    ).double()


def paired_neg_elbo_verdict(a: Path, b: Path, data_dir: str | None) -> dict:
    """ "a has the lower -ELBO than b" by the ordering rule, with the noise of the paired per-image difference."""
    return paired_verdict(per_image_neg_elbo(a, data_dir), per_image_neg_elbo(b, data_dir))


def paired_verdict(ea: torch.Tensor, eb: torch.Tensor) -> dict:
    """ "a is lower than b" for per-image values on the same images (95% half-width of the mean paired difference)."""
    diff = eb - ea
    hw = 1.959964 * diff.std().item() / math.sqrt(len(diff))
    return {
        "a": ea.mean().item(),
        "b": eb.mean().item(),
        "gap_b_minus_a": diff.mean().item(),
        "paired_half_width": hw,
        "verdict": ordering_verdict(Measured(ea.mean().item(), 0.0), Measured(eb.mean().item(), hw)),
    }


def run_numbers(path: Path, data_dir: str | None, extractor, samples: int) -> dict:
    model, cfg = load_run(path)
    groups = load_groups(cfg, data_dir)
    rounds = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in rounds if m.get("type") == "round"][-1]
    real = [to_uint8(g.test_images) for g in groups]
    gens = [generate(model, gi, samples, cfg.seed, None) for gi in range(len(groups))]
    out = {
        "run": str(path),
        "rounds": last["round"],
        "wall_seconds": json.loads((path / "status.json").read_text()).get("wall_seconds"),
        "neg_elbo_bpd": neg_elbo_bpd(model, groups, cfg.seed),
        "test_loss": last["test/loss"],
        "test_kl": last.get("test/kl_prior"),
        "kl_share": last["test/kl_prior"] / last["test/loss"] if "test/kl_prior" in last else None,
        "near_dup": near_duplicates(gens, real)["share"],
    }
    if model.pixel_scale is not None:  # the learned std against its closed-form optimum, sqrt(MSE) on test images
        out["std"] = math.exp(model.pixel_scale.log_std.item())
        out["optimum_std"] = optimum_std(model, groups, cfg.seed)
    if cfg.model.likelihood == "dlml":  # the same model's generations as the mixture mean (the old default)
        for br in model.branches:
            br.likelihood.generation = "mean"
        means = [generate(model, gi, samples, cfg.seed, None) for gi in range(len(groups))]
        out["mean_draw_near_dup"] = near_duplicates(means, real)["share"]
        out["sample_vs_mean_abs_diff"] = (torch.cat(gens).float() - torch.cat(means).float()).abs().mean().item() / 255
        if extractor is not None:
            m = fid_of(means, real_stats(groups, extractor), extractor)
            out["mean_draw_fid"], out["mean_draw_fid_hw"] = m.value, m.half_width
    if extractor is not None:
        f = fid_of(gens, real_stats(groups, extractor), extractor)
        out["fid"], out["fid_hw"] = f.value, f.half_width
    return out


def floor_numbers(path: Path, data_dir: str | None, extractor, samples: int) -> dict:
    _, cfg = load_run(path)
    groups = load_groups(cfg, data_dir)
    floors = [FloorModel.fit(g.train_images, "gaussian") for g in groups]
    nats = torch.cat([f.nll(g.test_images) for f, g in zip(floors, groups, strict=True)])
    dims = math.prod(groups[0].test_images.shape[1:])
    gens = [to_uint8(f.sample(samples, torch_generator(cfg.seed, "sample", 5000 + gi))) for gi, f in enumerate(floors)]
    out = {
        "nll_bpd": nats.mean().item() / dims / math.log(2),
        "near_dup": near_duplicates(gens, [to_uint8(g.test_images) for g in groups])["share"],
    }
    if extractor is not None:
        fid = fid_of(gens, real_stats(groups, extractor), extractor)
        out["fid"], out["fid_hw"] = fid.value, fid.half_width
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--samples", type=int, default=100, help="generated images per group")
    ap.add_argument("--paired", nargs=2, type=Path, metavar=("A", "B"), help="only: is A's -ELBO lower than B's?")
    ap.add_argument("--fid", action="store_true", help="also FID with a bootstrap interval (Inception: slow on a CPU)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.paired:
        print(json.dumps(paired_neg_elbo_verdict(*args.paired, args.data_dir), indent=1))
        return
    extractor = feature_extractor("auto", None, progress=False) if args.fid else None  # fp32 (OpenVINO where installed)
    rows = {p.name: run_numbers(p, args.data_dir, extractor, args.samples) for p in args.runs}
    out: dict = {"runs": rows, "floor": floor_numbers(args.runs[0], args.data_dir, extractor, args.samples)}
    claims = [
        ("fed-fission_ld", "fed-fission_d"),
        ("fed-fission_ld", "fed-fedvae"),
        ("fed-fission_d", "fed-fission_l"),
        ("fed-fission_ld_dlml", "fed-fission_ld"),  # Table 8: DLML generations beat the Gaussian's
    ]
    fids = {name: Measured(r["fid"], r["fid_hw"]) for name, r in rows.items() if "fid" in r}
    out["verdicts"] = {
        f"{a} < {b} (FID)": ordering_verdict(fids[a], fids[b]) for a, b in claims if a in rows and b in rows
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
