"""Tables 3 and 8 of docs/results/rgb.md on the RGB stand-in, from evaluated run folders.

Reads every run folder ``<runs>/{fed,cen}-<config>`` that has an ``eval.json`` (written by
``fissionvae evaluate --fid-bootstrap``): FID with its bootstrap interval, per-group FID, the
domain-classifier IS and purity, the negative ELBO and the IW bound; the last round's test KL from
``metrics.jsonl``; wall and CPU seconds from the ``/usr/bin/time -v`` files in ``--times``. Adds
what the evaluation does not compute: the floor row (each group's per-pixel Gaussian: exact NLL,
FID of as many samples as the runs generated, with a bootstrap interval), per-image negative ELBOs
(one z per test image, the evaluation's seeded stream) for paired verdicts, the learned global std
against its closed-form optimum, and for DLML runs the near-duplicate share and FID of the same
model's mixture-mean generations. Verdicts use ``fissionvae.evaluation.noise.ordering_verdict``
in the paper's direction. Writes ``<out>/rgb_standin.json``, the generated sections of the page
(between ``<!-- BEGIN generated:NAME -->`` and ``<!-- END generated:NAME -->`` markers) and
``<out>/samples.png``.

    PYTHONPATH=src python bench/rgb_tables.py runs/rgb --data-dir ../shared/data --times runs/rgb/_logs \\
        --out docs/results/rgb --page docs/results/rgb.md
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fissionvae.api import load_run
from fissionvae.data.federated import load_groups
from fissionvae.evaluation.collapse import near_duplicates
from fissionvae.evaluation.evaluate import generate, to_uint8
from fissionvae.evaluation.fid import feature_stats, fid_from_stats
from fissionvae.evaluation.floor import FloorModel
from fissionvae.evaluation.noise import Measured, ordering_verdict
from fissionvae.evaluation.runtimes import feature_extractor
from fissionvae.seeding import torch_generator
from fissionvae.viz import image_grid
from rgb_page_md import LABEL, TABLE3, TABLE8, compute_line, replace_section, table3, table8, verdict_tables
from rgb_standin_numbers import BOOTSTRAP_REPS, fid_of, optimum_std, paired_verdict, per_image_neg_elbo, real_stats

GRID_ROWS = [f"fed-{m}" for m in TABLE3] + [f"cen-{m}" for m in TABLE3]
GRID_ROWS += ["fed-fission_hld", "fed-fission_ld_dlml", "fed-fission_hld_dlml", "floor: per-pixel Gaussian"]
GRID_PER_GROUP = 8


def seconds(times: Path | None, run: str, what: str) -> dict | None:
    """Wall and CPU (user + system) seconds of ``<times>/<run>.<what>.time`` (``/usr/bin/time -v``)."""
    path = times / f"{run}.{what}.time" if times else None
    if path is None or not path.is_file():
        return None
    text = path.read_text()
    field = {k: re.search(rf"{re.escape(k)}: (.+)", text) for k in ("User time (seconds)", "System time (seconds)")}
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (.+)", text)
    parts = [float(x) for x in wall.group(1).split(":")] if wall else []
    return {
        "wall": sum(v * 60**i for i, v in enumerate(reversed(parts))),
        "cpu": sum(float(m.group(1)) for m in field.values() if m),
    }


def last_round(path: Path) -> dict:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [m for m in rows if m.get("type") == "round"][-1]


def run_row(path: Path, data_dir: str | None, times: Path | None, extractor) -> tuple[dict, torch.Tensor | None, list]:
    """A run's numbers, its per-image negative ELBO (None for a GAN) and its first generations per group."""
    ev = json.loads((path / "eval.json").read_text())
    model, cfg = load_run(path)
    groups = load_groups(cfg, data_dir)
    counts = list(ev["samples_per_group"].values())
    gens = [generate(model, gi, n, cfg.seed, None) for gi, n in enumerate(counts)]
    fid, clf = ev["fid"], ev["classifier"]
    lo, hi = fid["bootstrap"]["interval"]
    last = last_round(path)
    row: dict = {
        "run": path.name,
        "mode": cfg.mode,
        "likelihood": getattr(cfg.model, "likelihood", None),
        "rounds": ev["round"],
        "num_samples": ev["num_samples"],
        "eval_images": ev["eval_images"],
        "fid": fid["overall"],
        "fid_interval": [lo, hi],
        "fid_half_width": (hi - lo) / 2,
        "fid_bootstrap_reps": fid["bootstrap"]["reps"],
        "fid_per_group": {g: v["fid"] for g, v in fid["per_group"].items()},
        "is_domain": clf["is_domain"]["mean"],
        "purity": {g: v.get("purity") for g, v in clf["per_group"].items()},
        "near_dup": ev["collapse"]["near_duplicates"]["share"],
        "train_wall_total": json.loads((path / "status.json").read_text()).get("wall_seconds"),
        "train_time": seconds(times, path.name, "train"),
        "eval_time": seconds(times, path.name, "eval"),
        "eval_seconds": ev["seconds"],
    }
    if "neg_elbo" not in ev.get("nll", {}).get("overall", {}):
        return row, None, gens
    nll = ev["nll"]["overall"]
    kl = {k.removeprefix("test/"): v for k, v in last.items() if re.fullmatch(r"test/kl[^/]*", k)}
    row |= {
        "neg_elbo_bpd": nll["neg_elbo"]["bits_per_dim"],
        "neg_elbo_nats": nll["neg_elbo"]["nats_per_image"],
        "iw_bpd": nll["iw"]["bits_per_dim"],
        "iw_k": nll["iw"]["k"],
        "test_kl": kl,
        # of the negative ELBO (for +H models the training loss adds Eq. 10's z2 reconstruction term)
        "test_neg_elbo": last["test/neg_elbo"],
        "kl_share": sum(kl.values()) / last["test/neg_elbo"],
    }
    if model.pixel_scale is not None:
        row["std"] = math.exp(model.pixel_scale.log_std.item())
        row["optimum_std"] = optimum_std(model, groups, cfg.seed)
    if cfg.model.likelihood == "dlml":  # the same model's generations drawn as the mixture mean (the old default)
        for br in model.branches:
            br.likelihood.generation = "mean"
        means = [generate(model, gi, n, cfg.seed, None) for gi, n in enumerate(counts)]
        real = [to_uint8(g.test_images) for g in groups]
        row["mean_draw_near_dup"] = near_duplicates(means, real)["share"]
        m = fid_of(means, real_stats(groups, extractor), extractor)
        row["mean_draw_fid"], row["mean_draw_fid_half_width"] = m.value, m.half_width
    return row, per_image_neg_elbo(path, data_dir), gens


def floor_row(path: Path, data_dir: str | None, extractor, per_group: int) -> tuple[dict, torch.Tensor, list]:
    """Each group's per-pixel Gaussian: exact NLL per test image, and FID of ``per_group`` samples per group."""
    _, cfg = load_run(path)
    groups = load_groups(cfg, data_dir)
    floors = [FloorModel.fit(g.train_images, "gaussian") for g in groups]
    nats = torch.cat([f.nll(g.test_images) for f, g in zip(floors, groups, strict=True)])
    dims = math.prod(groups[0].test_images.shape[1:])
    gens = [
        to_uint8(f.sample(per_group, torch_generator(cfg.seed, "sample", 5000 + gi))) for gi, f in enumerate(floors)
    ]
    real = real_stats(groups, extractor)
    fid = fid_of(gens, real, extractor)
    per = {
        g.name: fid_from_stats(feature_stats(extractor(x).astype(np.float64)), r)
        for g, x, r in zip(groups, gens, real, strict=True)
    }
    row = {
        "nll_bpd": nats.mean().item() / dims / math.log(2),
        "nll_nats": nats.mean().item(),
        "fid": fid.value,
        "fid_half_width": fid.half_width,
        "fid_per_group": per,
        "num_samples": per_group * len(groups),
        "near_dup": near_duplicates(gens, [to_uint8(g.test_images) for g in groups])["share"],
    }
    return row, nats, gens


def claims(rows: dict) -> list[tuple[str, str, str]]:
    """(claim, a, b): "a is lower than b" in the paper's direction, for the rows present."""
    out = []
    for mode in ("fed", "cen"):
        # the paper's CHARM FIDs: +H+L+D just below +L+D federated (107.7 vs 109.1), well above it centralised
        hld = ("fission_hld_learnable", "fission_ld") if mode == "fed" else ("fission_ld", "fission_hld_learnable")
        for a, b in [
            ("fission_l", "fedvae"),
            ("fission_d", "fedvae"),
            ("fission_d", "fission_l"),
            ("fission_ld", "fedvae"),
            ("fission_ld", "fission_l"),
            ("fission_ld", "fission_d"),
            hld,
        ]:
            out.append((f"{mode}: {LABEL[a]} below {LABEL[b]}", f"{mode}-{a}", f"{mode}-{b}"))
    for m in TABLE3:
        out.append((f"{LABEL[m]}: centralised below federated", f"cen-{m}", f"fed-{m}"))
    for g, d in TABLE8:
        out.append((f"Table 8: {LABEL[d]} below Gaussian", f"fed-{d}", f"fed-{g}"))
    return [c for c in out if c[1] in rows and c[2] in rows]


def best_of(verdicts: list[str]) -> str:
    """ "a is best" from the pairwise "a below b" verdicts: holds only if every one holds."""
    if "differs" in verdicts:
        return "differs"
    return "same" if verdicts and all(v == "same" for v in verdicts) else "inconclusive"


def _paired(ea: torch.Tensor, eb: torch.Tensor) -> dict:
    """``paired_verdict`` with its means renamed (``a``/``b`` name the runs here)."""
    v = paired_verdict(ea, eb)
    v["a_mean_nats"], v["b_mean_nats"] = v.pop("a"), v.pop("b")
    return v


def verdicts(rows: dict, elbos: dict, floor: dict, floor_nats: torch.Tensor) -> dict:
    fid = {k: Measured(r["fid"], r["fid_half_width"]) for k, r in rows.items()}
    floor_fid = Measured(floor["fid"], floor["fid_half_width"])
    out: dict = {"fid": [], "neg_elbo": [], "vs_floor": {}}
    for claim, a, b in claims(rows):
        out["fid"].append({"claim": claim, "a": a, "b": b, "verdict": ordering_verdict(fid[a], fid[b])})
        if a in elbos and b in elbos:
            out["neg_elbo"].append({"claim": claim, "a": a, "b": b} | _paired(elbos[a], elbos[b]))
    for mode in ("fed", "cen"):
        others = [r for r in rows if r.startswith(f"{mode}-") and r != f"{mode}-fission_ld" and "dlml" not in r]
        if f"{mode}-fission_ld" in rows:
            pair = [ordering_verdict(fid[f"{mode}-fission_ld"], fid[o]) for o in others]
            out[f"{mode}: +L+D best by FID"] = best_of(pair)
        if f"{mode}-fedgan" in rows:
            pair = [
                ordering_verdict(fid[f"{mode}-fedgan"], fid[o])
                for o in rows
                if o.startswith(f"{mode}-") and o != f"{mode}-fedgan" and "dlml" not in o
            ]
            out[f"{mode}: FedGAN best by FID"] = best_of(pair)
    for k in rows:
        out["vs_floor"][k] = {"fid": ordering_verdict(fid[k], floor_fid)}
        if k in elbos:
            out["vs_floor"][k]["neg_elbo"] = _paired(elbos[k], floor_nats)
    return out


def write_grid(real: list, gens: dict, path: Path) -> None:
    """Real test images first, then each run's first generations per group; labelled rows; a 256-colour PNG."""
    rows = [("real test images", real)] + [(k, gens[k]) for k in GRID_ROWS if k in gens]
    grids = [
        image_grid(torch.cat([g[:GRID_PER_GROUP] for g in imgs]).float() / 255, nrow=2 * GRID_PER_GROUP)
        for _, imgs in rows
    ]
    label_w, h, w = 230, grids[0].shape[0], grids[0].shape[1]
    img = Image.new("RGB", (label_w + w, h * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for i, ((name, _), grid) in enumerate(zip(rows, grids, strict=True)):
        mode, _, m = name.partition("-")
        text = f"{LABEL[m]}, {'fed.' if mode == 'fed' else 'cen.'}" if mode in ("fed", "cen") else name
        draw.text((4, i * h + h // 2 - 6), text, fill="black")
        img.paste(Image.fromarray(grid), (label_w, i * h))
    buf = io.BytesIO()
    img.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)  # ~15x smaller
    path.write_bytes(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs_dir", type=Path)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--times", type=Path, help="folder of <run>.{train,eval}.time files (/usr/bin/time -v)")
    ap.add_argument("--out", type=Path, required=True, help="folder for rgb_standin.json and samples.png")
    ap.add_argument("--page", type=Path, help="the Markdown page whose generated sections to rewrite")
    args = ap.parse_args()
    torch.set_num_threads(1)
    extractor = feature_extractor("auto", None, progress=False)
    resumed = (
        json.loads((args.times / "resumed.json").read_text())
        if args.times and (args.times / "resumed.json").is_file()
        else {}
    )
    rows, elbos, gens = {}, {}, {}
    for path in sorted(p for p in args.runs_dir.iterdir() if (p / "eval.json").is_file()):
        row, elbo, gen = run_row(path, args.data_dir, args.times, extractor)
        row["resumed_after"] = resumed.get(path.name)
        rows[path.name], gens[path.name] = row, gen
        if elbo is not None:
            elbos[path.name] = elbo
        print(f"{path.name}: FID {row['fid']:.1f} ± {row['fid_half_width']:.1f}", flush=True)
    first = next(iter(rows))
    per_group = rows[first]["num_samples"] // len(rows[first]["fid_per_group"])
    floor, floor_nats, floor_gens = floor_row(args.runs_dir / first, args.data_dir, extractor, per_group)
    for r in rows.values():  # KL against what the model learned beyond the floor (nats/image)
        if "test_kl" in r:
            kl = sum(r["test_kl"].values())
            r["kl_share_of_gain"] = kl / (floor["nll_nats"] - r["neg_elbo_nats"] + kl)
    _, cfg = load_run(args.runs_dir / first)
    real = [to_uint8(g.test_images[:GRID_PER_GROUP]) for g in load_groups(cfg, args.data_dir)]
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "bootstrap_reps_floor": BOOTSTRAP_REPS,
        "runs": rows,
        "floor": floor,
        "verdicts": verdicts(rows, elbos, floor, floor_nats),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rgb_standin.json").write_text(json.dumps(result, indent=1) + "\n")
    write_grid(real, gens | {"floor: per-pixel Gaussian": floor_gens}, args.out / "samples.png")
    if args.page:
        page = args.page.read_text()
        page = replace_section(page, "table3", table3(rows, floor))
        page = replace_section(page, "table8", table8(rows, floor))
        page = replace_section(page, "verdicts", verdict_tables(rows, result["verdicts"], floor))
        page = replace_section(page, "compute", compute_line(rows))
        args.page.write_text(page)
    print(f"wrote {args.out / 'rgb_standin.json'}")


if __name__ == "__main__":
    main()
