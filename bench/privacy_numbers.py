"""docs/results/privacy.md's numbers: the sweep's run folders -> one JSON and the page's table.

Reads every row of ``bench/privacy_sweep.py`` that has its run folder under ``--runs-dir``
(``eval.json``, ``audit.json``, ``privacy.json``, ``metrics.jsonl``, ``sweep_timing.json``) and adds:

- a bootstrap 95% interval of FID, overall and per group (``noise.bootstrap_fid`` over the run's
  cached generated Inception features, the test statistics fixed; ``--reps`` resamples; kept in
  ``<run>/privacy_numbers_fid.json`` so that a rerun only bootstraps new runs);
- the floor row (``evaluation.floor_eval.floor_entry``: the mean-image model, its NLL on the same
  test subsets, its FID with the same Inception runtime and precision) for each data scale;
- the untrained models' test -ELBO (one z per image, the per-round test loss of round 0).

A row whose folder lacks an output is listed with what is missing. Writes ``--json`` and, with
``--page``, replaces the text between ``<!-- table:start -->`` and ``<!-- table:end -->`` there.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/privacy_numbers.py --runs-dir runs/privacy \
        --data-dir ../shared/data --json docs/results/privacy/privacy.json --page docs/results/privacy.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fissionvae.config import load_config
from fissionvae.evaluation.feature_cache import reference_stats
from fissionvae.evaluation.fid import feature_stats, fid_from_stats, pooled_stats
from fissionvae.evaluation.noise import Measured, bootstrap_fid, ordering_verdict
from fissionvae.io import atomic_write_json
from privacy_page_md import _eps, render, sample_grid
from privacy_sweep import CLIENT_SCALE, RECORD_SCALE, ROWS

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mixed_mnist"
MODEL_NAMES = {"fission_ld": "FissionVAE+L+D", "fedvae": "FedVAE"}
SCALES = {"rec": RECORD_SCALE, "cl": CLIENT_SCALE}
COUNT_INTRO = (
    "Client level, the count argument (computed from the models' parameter counts and the runs' noise "
    "multipliers): the noise on the averaged update, in units of one clipped client update C "
    "(below 1: smaller than one update)."
)


@dataclass(frozen=True)
class _Identity:
    """What ``reference_stats`` needs of an extractor to find cached test statistics: its identity."""

    identity: str


def _group_data(cfg, data_dir: str | None):
    from fissionvae.data.federated import load_groups

    return load_groups(cfg, data_dir, progress=False)


def fid_intervals(run: Path, ev: dict, groups, reps: int) -> dict:
    """FID (eval.json's) with bootstrap 95% half-widths, overall and per group, from the cached features."""
    identity = ev["fid"]["extractor"]
    tags = [p for p in (run / "eval" / "cache").iterdir() if not p.name.startswith("nll-")]
    if len(tags) != 1:
        raise ValueError(f"{run}: expected one generated-feature cache, found {[p.name for p in tags]}")
    tag = tags[0]
    feats, refs = [], []
    for gi, _ in enumerate(groups):
        key = hashlib.sha256(f"{tag.name}|{gi}|{identity}".encode()).hexdigest()
        parts = sorted((tag / "features").glob(f"{key[:24]}-*.npy"))
        feats.append(np.concatenate([np.load(p) for p in parts]).astype(np.float64))
        ref = reference_stats(groups[gi], _Identity(identity), cached_only=True)  # type: ignore[arg-type]
        if ref is None:
            raise ValueError(f"{run}: the test statistics for {identity} are not cached")
        refs.append(ref)
    out = {}
    for name, f, ref, point in [
        *((g.name, f, r, ev["fid"]["per_group"][g.name]["fid"]) for g, f, r in zip(groups, feats, refs, strict=True)),
        ("overall", np.concatenate(feats), pooled_stats(refs), ev["fid"]["overall"]),
    ]:
        check = fid_from_stats(feature_stats(f), ref)
        if abs(check - point) > 1e-4 * max(1.0, abs(point)):
            raise ValueError(f"{run}: cached features give FID {check:.3f} for {name}, eval.json {point:.3f}")
        lo, hi = bootstrap_fid(f, ref, reps=reps, seed=0)
        out[name] = {"fid": point, "interval": [lo, hi], "half_width": (hi - lo) / 2, "samples": len(f)}
    return out


def auc_half_width(auc: float, members: int, nonmembers: int) -> float:
    """95% half-width of an AUC (Hanley and McNeil, Radiology 1982: the standard error of the Mann-Whitney AUC)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (members - 1) * (q1 - auc**2) + (nonmembers - 1) * (q2 - auc**2)) / (members * nonmembers)
    return 1.959964 * math.sqrt(max(var, 0.0))


def per_image_neg_elbo(run: Path, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-image test -ELBO (nats, one seeded z) of a run and the floor's exact NLL of the same images."""
    import torch

    from fissionvae.api import load_run
    from fissionvae.evaluation.floor import FloorModel
    from fissionvae.seeding import torch_generator

    model, cfg = load_run(run)
    cfg = load_config(run / "config.yaml", [f"data.groups.{i}.test_size=1000" for i in (0, 1)])
    g = torch_generator(cfg.seed, "eval", 10**6)
    ours, floor = [], []
    with torch.no_grad():
        for gi, grp in enumerate(_group_data(cfg, data_dir)):
            x = grp.test_images
            ours.append(model.terms(x, torch.full((len(x),), gi, dtype=torch.int64), g)["neg_elbo"].double().numpy())
            floor.append(FloorModel.fit(grp.train_images).nll(x).numpy())
    return np.concatenate(ours), np.concatenate(floor)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean of b - a over the same images and its 95% half-width (paired), and whether a < b."""
    diff = b - a
    hw = 1.959964 * float(diff.std(ddof=1)) / math.sqrt(len(diff))
    verdict = ordering_verdict(Measured(float(a.mean()), 0.0), Measured(float(b.mean()), hw))
    return {"a": float(a.mean()), "b": float(b.mean()), "gap": float(diff.mean()), "half_width": hw, "verdict": verdict}


def nll_verdicts(rows: list[dict], runs_dir: Path, data_dir: str | None) -> list[dict]:
    """Per row: its test -ELBO against the floor's NLL and against the same federation without DP (paired)."""
    elbo = {r["row"]: per_image_neg_elbo(runs_dir / r["row"], data_dir) for r in rows if "missing" not in r}
    out = []
    for name, (ours, floor) in elbo.items():
        entry = {"row": name, "vs_floor": paired(ours, floor)}
        base = name.rsplit("-", 1)[0] + "-inf"
        if base in elbo and base != name:
            entry["vs_no_dp"] = paired(elbo[base][0], ours)
        out.append(entry)
    return out


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def row_numbers(name: str, run: Path, data_dir: str | None, reps: int) -> dict:
    model, _ = ROWS[name]
    scale, eps = name.split("-")[0], name.split("-")[-1]
    row: dict = {"row": name, "model": MODEL_NAMES[model], "level": {"rec": "record", "cl": "client"}[scale]}
    row["target_epsilon"] = None if eps == "inf" else float(eps)
    status = _read(run / "status.json")
    if status is None or status.get("state") != "finished":
        return row | {"missing": "training"}
    timing = _read(run / "sweep_timing.json") or {}
    row["timing"] = timing  # wall_s, cpu_s and the command of each stage (train, evaluate, audit)
    row["train_wall_s"] = timing.get("train", {}).get("wall_s")
    row["train_cpu_s"] = timing.get("train", {}).get("cpu_s")
    row["rounds"] = status["rounds_done"]
    privacy = _read(run / "privacy.json")
    if privacy is not None:
        row["epsilon_worst"] = privacy["epsilon_max"]
        row["noise_multiplier"] = privacy["noise_multiplier"]
        row["delta"] = privacy["delta"]
        row["clip_norm"] = privacy["clip_norm"]
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rounds if r.get("type") == "round"][-1]
    row["last_round_test_neg_elbo"] = last["test/neg_elbo"]
    ev = _read(run / "eval.json")
    if ev is None:
        return row | {"missing": "evaluate"}
    row["eval_cpu_s"] = timing.get("evaluate", {}).get("cpu_s")
    cfg = load_config(run / "config.yaml", [f"data.groups.{i}.test_size={ev['test_size']}" for i in (0, 1)])
    groups = _group_data(cfg, data_dir)
    cached = run / "privacy_numbers_fid.json"  # the bootstrap is the slow part: once per run and reps
    fid = _read(cached)
    if fid is None or fid.get("reps") != reps or fid.get("weights_sha256") != ev["weights_sha256"]:
        fid = {"reps": reps, "weights_sha256": ev["weights_sha256"], "fid": fid_intervals(run, ev, groups, reps)}
        atomic_write_json(cached, fid)
    row["fid"] = fid["fid"]
    row["purity"] = {g: v["purity"] for g, v in ev["classifier"]["per_group"].items()}
    row["nll"] = {
        "neg_elbo": ev["nll"]["overall"]["neg_elbo"]["nats_per_image"],
        "iw": ev["nll"]["overall"]["iw"]["nats_per_image"],
        "iw_k": ev["nll"]["overall"]["iw"].get("k"),
        "per_group_iw": {g: v["iw"]["nats_per_image"] for g, v in ev["nll"]["per_group"].items()},
    }
    audit = _read(run / "audit.json")
    if audit is None:
        return row | {"missing": "audit"}
    row["audit_cpu_s"] = timing.get("audit", {}).get("cpu_s")
    membership = audit["membership"]
    row["mia"] = {
        g: {k: v[k] for k in ("auc", "members", "nonmembers", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")}
        | {"auc_half_width": auc_half_width(v["auc"], v["members"], v["nonmembers"])}
        for g, v in membership["per_group"].items()
    }
    clients = [v["auc"] for v in membership["per_client"].values()]
    row["mia_client_auc"] = {"min": min(clients), "median": float(np.median(clients)), "max": max(clients)}
    row["nn_ratio"] = {g: v["pixel"]["nn_ratio_median"] for g, v in audit["memorisation"].items()}
    row["data_copying"] = {g: v["pixel"]["data_copying"]["c_t"] for g, v in audit["memorisation"].items()}
    pairs = audit["cross_group"].get("pairs", {})
    row["cross_group"] = {k: {"auc": v["auc"], "own_branch_auc": v["own_branch_auc"]} for k, v in pairs.items()}
    return row


def floor_row(scale: str, data_dir: str | None, fid_bf16: bool) -> dict:
    """The mean-image model on the scale's training images, scored on the same 1,000-image test subsets."""
    from fissionvae.evaluation.floor_eval import floor_entry
    from fissionvae.evaluation.options import EvalOptions

    cfg = load_config(CONFIGS / "fission_ld.yaml", SCALES[scale])
    entry = floor_entry(
        cfg,
        data_dir,
        EvalOptions(num_samples=1000, test_size=1000, fid_bf16=fid_bf16, progress=False, data_dir=data_dir),
    )
    return {"row": f"{scale}-floor", "scale": scale} | entry


def untrained_row(name: str, data_dir: str | None) -> dict:
    """The model before its first round: the per-round test -ELBO at round 0 (one z per image)."""
    from fissionvae.federation.engine import Federation, test_metrics

    model, sets = ROWS[name]
    fed = Federation.from_config(load_config(CONFIGS / f"{model}.yaml", sets), data_dir)
    metrics = test_metrics(fed, 0)
    return {
        "row": name.rsplit("-", 1)[0] + "-untrained",
        "model": MODEL_NAMES[model],
        "test_neg_elbo": metrics["test/neg_elbo"],
    }


def noise_over_clip(sets: list[str], clients_per_group: int, participation: float) -> dict:
    """Client-level DP: norm of the noise on the averaged update, in units of sigma * C.

    Each state-dict entry k gets N(0, (sigma C)^2) per coordinate on its sum, divided by
    W_k = q * (clients owning k); a client's averaged update is at most C. The noise vector's norm
    over one client's keys is sigma C sqrt(sum_k d_k / W_k^2): below 1 the noise is smaller than one
    whole clipped update.
    """
    from fissionvae.api import build_model

    cfg = load_config(CONFIGS / "fission_ld.yaml", sets)
    model = build_model(cfg, (1, 28, 28))
    groups = [[g] for g in range(2) for _ in range(clients_per_group)]
    from fissionvae.privacy.plan import owners_of

    owners = owners_of(model, groups)
    sd = model.state_dict()
    mine = model.owned_keys([0])  # one client of group 0: the encoder and its branch
    d = sum(sd[k].numel() for k in mine if sd[k].is_floating_point())
    ratio = math.sqrt(sum(sd[k].numel() / (participation * owners[k]) ** 2 for k in mine if sd[k].is_floating_point()))
    return {"clients_per_group": clients_per_group, "participation": participation, "d": d, "ratio": ratio}


def count_table(rows: list[dict]) -> tuple[str, list[dict]]:
    """Why 3,000 clients per group and a small MLP: the noise-to-update ratio at each epsilon's sigma."""
    sigmas = {_eps(r): r["noise_multiplier"] for r in rows if r["row"].startswith("cl-") and "noise_multiplier" in r}
    paper = [s for s in RECORD_SCALE if not s.startswith("data.")]
    cases = [
        ("paper MLP, 10 clients per group (the paper's federation)", noise_over_clip(paper, 10, 0.5)),
        ("paper MLP, 3,000 clients per group", noise_over_clip(paper, 3000, 0.2)),
        ("64-unit MLP, 3,000 clients per group (our cl rows)", noise_over_clip(CLIENT_SCALE, 3000, 0.2)),
    ]
    eps = sorted(sigmas, key=float)
    head = "| federation | q | d (one client's update) | noise norm / (sigma C) | " + " | ".join(
        f"at eps {e} (sigma {sigmas[e]:.2f})" for e in eps
    )
    lines = [head + " |", "|" + "---|" * (head.count("|"))]
    for label, c in cases:
        cells = [label, f"{c['participation']:g}", f"{c['d']:,}", f"{c['ratio']:.2f}"]
        cells += [f"{c['ratio'] * sigmas[e]:.2f}" for e in eps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), [c for _, c in cases]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/privacy"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--page", type=Path, default=None)
    ap.add_argument("--picture", type=Path, default=None, help="the sample grid PNG")
    ap.add_argument("--reps", type=int, default=30, help="bootstrap resamples of each FID")
    args = ap.parse_args()
    rows = [row_numbers(n, args.runs_dir / n, args.data_dir, args.reps) for n in ROWS]
    bf16 = any(
        json.loads((args.runs_dir / r["row"] / "eval.json").read_text())["fid"]["precision"] != "fp32"
        for r in rows
        if "fid" in r
    )
    floors = [floor_row(s, args.data_dir, bf16) for s in SCALES]
    untrained = [untrained_row(n, args.data_dir) for n in ("rec-ld-inf", "rec-fedvae-inf", "cl-ld-inf")]
    groups = ["mnist", "fashion"]
    counts, cases = count_table(rows)
    nll = nll_verdicts(rows, args.runs_dir, args.data_dir)
    atomic_write_json(
        args.json,
        {
            "rows": rows,
            "floors": floors,
            "untrained": untrained,
            "client_count": cases,
            "nll_verdicts": nll,
            "fid_bf16": bf16,
            "reps": args.reps,
        },
    )
    table = render(rows, floors, untrained, groups, nll) + "\n\n" + COUNT_INTRO + "\n\n" + counts
    print(table)
    if args.page is not None:
        text = args.page.read_text()
        new = re.sub(
            r"<!-- table:start -->.*<!-- table:end -->",
            lambda _: f"<!-- table:start -->\n{table}\n<!-- table:end -->",
            text,
            flags=re.S,
        )
        if new == text and "<!-- table:start -->" not in text:
            raise SystemExit(f"{args.page}: no <!-- table:start --> ... <!-- table:end --> markers")
        args.page.write_text(new)
    if args.picture is not None:
        sample_grid(rows, args.runs_dir, args.picture)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
