"""docs/results/privacy.md's markdown tables and sample grid, from the rows ``privacy_numbers.py`` computes."""

from __future__ import annotations

from pathlib import Path

from fissionvae.evaluation.noise import Measured, ordering_verdict


def verdicts(rows: list[dict], floors: list[dict], groups: list[str]) -> list[str]:
    """The page's claims, each decided by ``ordering_verdict`` against the measured noise."""
    out = []
    floor_fid = {fl["scale"]: (fl.get("fid") or {}).get("overall") for fl in floors}
    done = {r["row"]: r for r in rows if "fid" in r}
    for name, r in done.items():
        scale, fid = name.split("-")[0], r["fid"]["overall"]
        measured = Measured(fid["fid"], fid["half_width"])
        if floor_fid[scale] is not None:  # the floor's FID has no sampling noise: its one image per group
            v = ordering_verdict(measured, Measured(floor_fid[scale], 0.0))
            out.append(f"`{name}` FID below the floor's ({fid['fid']:.1f} vs {floor_fid[scale]:.1f}): {_word(v)}")
        base = done.get(name.rsplit("-", 1)[0] + "-inf")
        if base is not None and base is not r:
            b = base["fid"]["overall"]
            v = ordering_verdict(Measured(b["fid"], b["half_width"]), measured)
            out.append(f"`{name}` FID worse than without DP ({fid['fid']:.1f} vs {b['fid']:.1f}): {_word(v)}")
        if "mia" in r:
            for g in groups:
                m = r["mia"][g]
                v = ordering_verdict(Measured(0.5, 0.0), Measured(m["auc"], m["auc_half_width"]))
                auc = f"{m['auc']:.3f} +- {m['auc_half_width']:.3f}"
                out.append(f"`{name}` membership AUC on {g} above 0.5 ({auc}): {_word(v)}")
    return out


def _word(verdict: str) -> str:
    return {"same": "**yes**", "differs": "**no** (the other way)", "inconclusive": "inconclusive (within noise)"}[
        verdict
    ]


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _eps(row: dict) -> str:
    return "inf" if row.get("target_epsilon") is None else f"{row['target_epsilon']:g}"


def render(rows: list[dict], floors: list[dict], untrained: list[dict], groups: list[str], nll: list[dict]) -> str:
    """The page's two tables (utility; leakage) and the list of missing rows, as markdown."""
    g0, g1 = groups
    head = (
        f"| DP level | model | target eps | eps reached (worst client) | noise mult. | FID all (95% CI +-) | FID {g0} "
        f"| FID {g1} | purity {g0} / {g1} | NLL: -ELBO / IW (nats) | MIA AUC {g0} / {g1} | NN ratio {g0} / {g1} "
        "| train wall / CPU (s) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for fl in floors:
        fid = fl.get("fid") or {}
        pg = fid.get("per_group", {})
        floor_nll = sum(v["nats_per_image"] * v["images"] for v in fl["nll"].values()) / sum(
            v["images"] for v in fl["nll"].values()
        )
        what = {"rec": "record-level data (6,000 / group)", "cl": "client-level data (60,000 / group)"}[fl["scale"]]
        lines.append(
            f"| **floor** | mean image, {what} | - | - | - | {_f(fid.get('overall'))} | {_f(pg.get(g0))} | "
            f"{_f(pg.get(g1))} | - | {_f(floor_nll)} (exact) | - | - | - |"
        )
    for u in untrained:
        lines.append(
            f"| untrained | {u['model']} ({u['row'].split('-')[0]}) | - | - | - | - | - | - | - | "
            f"{_f(u['test_neg_elbo'])} / - | - | - | - |"
        )
    missing = []
    for r in rows:
        level, model, eps = r["level"], r["model"], _eps(r)
        if "missing" in r and r["missing"] == "training":
            missing.append(r)
            continue
        cells = [level, model + (" (64-unit MLP)" if r["row"].startswith("cl-") else ""), eps]
        cells += [_f(r.get("epsilon_worst"), 2), _f(r.get("noise_multiplier"), 2)]
        if "fid" in r:
            fid = r["fid"]
            cells += [f"{fid['overall']['fid']:.1f} +- {fid['overall']['half_width']:.1f}"]
            cells += [f"{fid[g]['fid']:.1f} +- {fid[g]['half_width']:.1f}" for g in groups]
            cells += [
                f"{r['purity'][g0]:.2f} / {r['purity'][g1]:.2f}",
                f"{r['nll']['neg_elbo']:.1f} / {r['nll']['iw']:.1f}",
            ]
        else:
            cells += ["-"] * 5
        if "mia" in r:
            cells += [" / ".join(f"{r['mia'][g]['auc']:.3f} +- {r['mia'][g]['auc_half_width']:.3f}" for g in groups)]
            cells += [f"{r['nn_ratio'][g0]:.3f} / {r['nn_ratio'][g1]:.3f}"]
        else:
            cells += ["-", "-"]
        cells += [f"{_f(r.get('train_wall_s'), 0)} / {_f(r.get('train_cpu_s'), 0)}"]
        lines.append("| " + " | ".join(cells) + " |")
        if "missing" in r:
            missing.append(r)
    lines += ["", _leakage(rows, groups), "", "Verdicts (`ordering_verdict`: a gap within the combined 95% noise is"]
    lines += ["inconclusive; FID noise = the bootstrap half-width, AUC noise = Hanley-McNeil):", ""]
    lines += [f"- {v}" for v in verdicts(rows, floors, groups)]
    for e in nll:
        f = e["vs_floor"]
        lines.append(
            f"- `{e['row']}` test -ELBO below the floor's NLL ({f['a']:.1f} vs {f['b']:.1f}, paired gap "
            f"{f['gap']:.1f} +- {f['half_width']:.1f} nats): {_word(f['verdict'])}"
        )
        if "vs_no_dp" in e:
            d = e["vs_no_dp"]
            lines.append(
                f"- `{e['row']}` test -ELBO worse than without DP ({d['b']:.1f} vs {d['a']:.1f}, paired gap "
                f"{d['gap']:.1f} +- {d['half_width']:.1f} nats): {_word(d['verdict'])}"
            )
    if missing:
        lines += ["", "Not measured yet (the sweep's command completes them; it skips what exists):", ""]
        lines += [f"- `{r['row']}`: {r['missing']} missing" for r in missing]
    return "\n".join(lines)


def _leakage(rows: list[dict], groups: list[str]) -> str:
    """The audit's detail: TPR at low FPR, the most exposed client, data copying, cross-group AUCs."""
    g0, g1 = groups
    head = (
        f"| DP level | model | target eps | MIA TPR@1% FPR {g0} / {g1} | TPR@0.1% {g0} / {g1} "
        f"| client AUC median / max | data copying C_T {g0} / {g1} | cross-group AUC {g0}->{g1} / {g1}->{g0} "
        "(own branch) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "mia" not in r:
            continue
        m, cg = r["mia"], r["cross_group"]
        cross = (
            " / ".join(f"{cg[k]['auc']:.3f} ({cg[k]['own_branch_auc']:.3f})" for k in (f"{g0}->{g1}", f"{g1}->{g0}"))
            if cg
            else "- (one decoder)"
        )
        lines.append(
            f"| {r['level']} | {r['model']} | {_eps(r)} "
            f"| {m[g0]['tpr_at_1pct_fpr']['tpr']:.3f} / {m[g1]['tpr_at_1pct_fpr']['tpr']:.3f} "
            f"| {m[g0]['tpr_at_0.1pct_fpr']['tpr']:.3f} / {m[g1]['tpr_at_0.1pct_fpr']['tpr']:.3f} "
            f"| {r['mia_client_auc']['median']:.3f} / {r['mia_client_auc']['max']:.3f} "
            f"| {_f(r['data_copying'][g0], 2)} / {_f(r['data_copying'][g1], 2)} | {cross} |"
        )
    return "\n".join(lines)


def sample_grid(rows: list[dict], runs_dir: Path, out: Path, per_group: int = 8) -> None:
    """One PNG: a row of samples per run (the evaluation's first draws), each group's beside the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from fissionvae.api import load_run
    from fissionvae.evaluation.generation import generate

    done = [r for r in rows if "fid" in r]
    strips, labels = [], []
    for r in done:
        model, cfg = load_run(runs_dir / r["row"])
        with torch.no_grad():
            parts = [generate(model, gi, per_group, cfg.seed, None) for gi in range(2)]
        gap = torch.full((1, 28, 4), 255, dtype=torch.uint8)
        tiles = [t for gi, p in enumerate(parts) for t in ([*p] + ([gap] if gi == 0 else []))]
        strips.append(torch.cat(tiles, dim=2)[0].numpy())
        labels.append(f"{r['level']} {r['model'].replace('FissionVAE', 'FVAE')} eps={_eps(r)}")
    fig, axes = plt.subplots(len(strips), 1, figsize=(5.2, 0.27 * len(strips) + 0.1), squeeze=False)
    for ax, strip, label in zip(axes[:, 0], strips, labels, strict=True):
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=6)
    fig.subplots_adjust(left=0.3, right=0.99, top=0.99, bottom=0.01, hspace=0.05)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
