"""Numbers of docs/results/rgb.md that ``evaluate`` does not print, from evaluated stand-in run folders.

Per run: FID with its bootstrap 95% half-width (from the evaluation's cached features), -ELBO and
IW bits/dim, the last round's test KL share of the loss, the learned global std, the near-duplicate
share of its generations; for DLML runs also the near-duplicate share and FID of the same model's
generations drawn as the mixture mean (the old behaviour). Then the floor: the per-pixel Gaussian
of each group (bits/dim on its test images; FID of 100 samples per group), and the verdicts of the
ordering claims (``ordering_verdict``).

    PYTHONPATH=src python bench/rgb_standin_numbers.py runs/rgb/fed-* --data-dir ../shared/data
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
from fissionvae.evaluation.fid import InceptionFeatures, StatsCache, feature_stats, fid_from_stats
from fissionvae.evaluation.floor import FloorModel
from fissionvae.evaluation.inception import resolve_inception_path
from fissionvae.evaluation.noise import Measured, bootstrap_fid, half_width, ordering_verdict
from fissionvae.seeding import torch_generator
from fissionvae.studies.run_noise import fid_measured

FLOOR_SAMPLES = 100  # per group


def real_stats(groups, identity: str):
    cache = StatsCache()
    return [cache.load(f"{g.dataset}-test", cache.key(to_uint8(g.test_images), identity)) for g in groups]


def fid_of(samples: list[torch.Tensor], real, extractor) -> Measured:
    feats = np.concatenate([extractor(s) for s in samples]).astype(np.float64)
    ref = pooled_stats(real)
    return Measured(fid_from_stats(feature_stats(feats), ref), half_width(bootstrap_fid(feats, ref, reps=200)))


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


def run_numbers(path: Path, data_dir: str | None, extractor) -> dict:
    result = json.loads((path / "eval.json").read_text())
    model, cfg = load_run(path)
    groups = load_groups(cfg, data_dir)
    fid = fid_measured(path, result, groups)
    last = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    last_round = [m for m in last if m.get("type") == "round"][-1]
    nll = result["nll"]["overall"]
    out = {
        "run": str(path),
        "rounds": result["round"],
        "fid": fid.value,
        "fid_hw": fid.half_width,
        "fid_per_group": {k: v["fid"] for k, v in result["fid"]["per_group"].items()},
        "neg_elbo_bpd": nll["neg_elbo"]["bits_per_dim"],
        "iw_bpd": nll["iw"]["bits_per_dim"],
        "kl_share": last_round["test/kl_prior"] / last_round["test/loss"] if "test/kl_prior" in last_round else None,
        "test_kl": last_round.get("test/kl_prior"),
        "near_dup": result["collapse"]["near_duplicates"]["share"],
        "purity": {k: v.get("purity") for k, v in result["classifier"]["per_group"].items()},
    }
    if model.pixel_scale is not None:  # the learned std against its closed-form optimum, sqrt(MSE) on test images
        out["std"] = math.exp(model.pixel_scale.log_std.item())
        out["optimum_std"] = optimum_std(model, groups, cfg.seed)
    if cfg.model.likelihood == "dlml":  # the same model's generations as the mixture mean (the old default)
        for br in model.branches:
            br.likelihood.generation = "mean"
        counts = [s["generated"] for s in result["fid"]["per_group"].values()]
        means = [generate(model, gi, n, cfg.seed, None) for gi, n in enumerate(counts)]
        out["mean_draw_near_dup"] = near_duplicates(means, [to_uint8(g.test_images) for g in groups])["share"]
        m = fid_of(means, real_stats(groups, extractor.identity), extractor)
        out["mean_draw_fid"], out["mean_draw_fid_hw"] = m.value, m.half_width
    return out


def floor_numbers(path: Path, data_dir: str | None, extractor) -> dict:
    _, cfg = load_run(path)
    groups = load_groups(cfg, data_dir)
    floors = [FloorModel.fit(g.train_images, "gaussian") for g in groups]
    nats = torch.cat([f.nll(g.test_images) for f, g in zip(floors, groups, strict=True)])
    dims = math.prod(groups[0].test_images.shape[1:])
    gens = [
        to_uint8(f.sample(FLOOR_SAMPLES, torch_generator(cfg.seed, "sample", 5000 + gi))) for gi, f in enumerate(floors)
    ]
    fid = fid_of(gens, real_stats(groups, extractor.identity), extractor)
    return {
        "nll_bpd": nats.mean().item() / dims / math.log(2),
        "fid": fid.value,
        "fid_hw": fid.half_width,
        "near_dup": near_duplicates(gens, [to_uint8(g.test_images) for g in groups])["share"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    extractor = InceptionFeatures(resolve_inception_path(None), progress=False)
    rows = {p.name: run_numbers(p, args.data_dir, extractor) for p in args.runs if (p / "eval.json").is_file()}
    out: dict = {"runs": rows, "floor": floor_numbers(args.runs[0], args.data_dir, extractor)}
    claims = [("fed-fission_ld", "fed-fission_d"), ("fed-fission_ld", "fed-fedvae"), ("fed-fission_d", "fed-fission_l")]
    fids = {name: Measured(r["fid"], r["fid_hw"]) for name, r in rows.items()}
    out["verdicts"] = {
        f"{a} < {b} (FID)": ordering_verdict(fids[a], fids[b]) for a, b in claims if a in rows and b in rows
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
