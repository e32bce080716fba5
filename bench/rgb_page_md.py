"""The Markdown of docs/results/rgb.md's generated sections, from ``bench/rgb_tables.py``'s numbers.

Row labels and table order, Tables 3 and 8 with the floor row, the verdict tables, the compute
line, and the replacement of a page's ``<!-- BEGIN generated:NAME -->`` ... ``<!-- END
generated:NAME -->`` sections.
"""

from __future__ import annotations

import re

LABEL = {
    "fedvae": "FedVAE",
    "fission_l": "FissionVAE+L (wave)",
    "fission_d": "FissionVAE+D",
    "fission_ld": "FissionVAE+L+D (wave)",
    "fission_hld_learnable": "FissionVAE+H+L+D (learnable)",
    "fission_hld": "FissionVAE+H+L+D (wave)",
    "fission_ld_dlml": "FissionVAE+L+D, DLML",
    "fission_hld_dlml": "FissionVAE+H+L+D (wave), DLML",
    "fedgan": "FedGAN (DCGAN)",
}
TABLE3 = ["fedvae", "fission_l", "fission_d", "fission_ld", "fission_hld_learnable", "fedgan"]
TABLE8 = [("fission_ld", "fission_ld_dlml"), ("fission_hld", "fission_hld_dlml")]


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _times(r: dict) -> str:
    t, e = r.get("train_time"), r.get("eval_time")
    mark = "†" if r.get("resumed_after") else ""
    train = f"{_f(r['train_wall_total'], 0)} / {_f(t['cpu'], 0) if t else '-'}{mark}"
    return f"{train} | {_f(e['wall'], 0) if e else '-'} / {_f(e['cpu'], 0) if e else '-'}"


def _kl(r: dict) -> str:
    if "test_kl" not in r:
        return "-"
    return f"{_f(sum(r['test_kl'].values()))} ({100 * r['kl_share']:.2f}% / {100 * r['kl_share_of_gain']:.0f}%)"


def table3(rows: dict, floor: dict) -> str:
    groups = list(floor["fid_per_group"])
    head = (
        f"| model | mode | FID ± 95% half-width | FID {' / '.join(groups)} | IS (domain clf.) | purity "
        f"{' / '.join(groups)} | -ELBO bits/dim | IW bits/dim (K=10) | test KL, nats (share of the -ELBO / "
        "of the gain over the floor) | "
        "train wall / CPU s | eval wall / CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for mode in ("fed", "cen"):
        for m in TABLE3:
            r = rows.get(f"{mode}-{m}")
            if r is None:
                continue
            lines.append(
                f"| {LABEL[m]} | {'federated' if mode == 'fed' else 'centralised'} "
                f"| {_f(r['fid'])} ± {_f(r['fid_half_width'])} "
                f"| {' / '.join(_f(r['fid_per_group'][g]) for g in groups)} | {_f(r['is_domain'], 2)} "
                f"| {' / '.join(_f(r['purity'][g], 2) for g in groups)} | {_f(r.get('neg_elbo_bpd'), 3)} "
                f"| {_f(r.get('iw_bpd'), 3)} | {_kl(r)} | {_times(r)} |"
            )
    lines.append(
        f"| **floor**: per-pixel Gaussian of each group | - | {_f(floor['fid'])} ± {_f(floor['fid_half_width'])} "
        f"| {' / '.join(_f(floor['fid_per_group'][g]) for g in groups)} | - | - | {_f(floor['nll_bpd'], 3)} (exact) "
        "| - | - | - | - |"
    )
    return head + "\n".join(lines) + "\n"


def table8(rows: dict, floor: dict) -> str:
    head = (
        "| model | likelihood | FID ± 95% half-width | IS (domain clf.) | -ELBO bits/dim | IW bits/dim (K=10) "
        "| test KL, nats (share of the -ELBO / "
        "of the gain over the floor) | global std (optimum) | near-duplicates: samples (mixture mean) "
        "| FID of the mixture mean | train wall / CPU s | eval wall / CPU s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for pair in TABLE8:
        for m in pair:
            r = rows.get(f"fed-{m}")
            if r is None:
                continue
            std = f"{r['std']:.3f} ({r['optimum_std']:.3f})" if "std" in r else "-"
            dup = f"{r['near_dup']:.2f}" + (f" ({r['mean_draw_near_dup']:.2f})" if "mean_draw_near_dup" in r else "")
            mean_fid = (
                f"{_f(r['mean_draw_fid'])} ± {_f(r['mean_draw_fid_half_width'])}" if "mean_draw_fid" in r else "-"
            )
            lines.append(
                f"| {LABEL[pair[1]].split(',')[0]} | {'DLML (K = 10)' if m.endswith('dlml') else 'Gaussian'} "
                f"| {_f(r['fid'])} ± {_f(r['fid_half_width'])} | {_f(r['is_domain'], 2)} | {_f(r['neg_elbo_bpd'], 3)} "
                f"| {_f(r['iw_bpd'], 3)} | {_kl(r)} | {std} | {dup} | {mean_fid} | {_times(r)} |"
            )
    lines.append(
        f"| **floor** | per-pixel Gaussian | {_f(floor['fid'])} ± {_f(floor['fid_half_width'])} | - "
        f"| {_f(floor['nll_bpd'], 3)} (exact) | - | - | per pixel | {floor['near_dup']:.2f} | - | - | - |"
    )
    return head + "\n".join(lines) + "\n"


def verdict_tables(rows: dict, v: dict, floor: dict) -> str:
    out = [
        "| claim (the paper's direction) | FID a vs b | verdict (FID) "
        "| -ELBO b - a, nats/image (paired) | verdict (-ELBO) |"
    ]
    out.append("|---|---|---|---|---|")
    nll = {(c["a"], c["b"]): c for c in v["neg_elbo"]}
    for c in v["fid"]:
        n = nll.get((c["a"], c["b"]))
        gap = f"{_f(n['gap_b_minus_a'])} ± {_f(n['paired_half_width'])}" if n else "-"
        fa, fb = rows[c["a"]]["fid"], rows[c["b"]]["fid"]
        out.append(f"| {c['claim']} | {_f(fa)} vs {_f(fb)} | {c['verdict']} | {gap} | {n['verdict'] if n else '-'} |")
    word = {"same": "holds", "differs": "does not hold", "inconclusive": "inconclusive"}
    best = [
        f"- {k.replace('fed:', 'Federated:').replace('cen:', 'Centralised:')} (below every other row of its mode "
        f"beyond the noise, DLML rows aside): **{word[val]}**"
        for k, val in v.items()
        if "best" in k
    ]
    floor_lines = [
        "| run | FID below the floor's | -ELBO below the floor's NLL: floor - model, nats/image (paired) | verdict |",
        "|---|---|---|---|",
    ]
    for k, f in v["vs_floor"].items():
        n = f.get("neg_elbo")
        gap = f"{_f(n['gap_b_minus_a'])} ± {_f(n['paired_half_width'])}" if n else "-"
        below = {"same": "yes", "differs": "no: the floor's is lower", "inconclusive": "inconclusive"}
        nll_v = below[n["verdict"]] if n else "-"
        floor_lines.append(f"| {k} | {below[f['fid']]} | {gap} | {nll_v} |")
    return "\n".join(out) + "\n\n" + "\n".join(best) + "\n\n" + "\n".join(floor_lines) + "\n"


def compute_line(rows: dict) -> str:
    """Total CPU and wall seconds of this page's training and evaluation, from the /usr/bin/time files."""
    tot = {w: [r[f"{w}_time"] for r in rows.values() if r.get(f"{w}_time")] for w in ("train", "eval")}
    cpu = {w: sum(t["cpu"] for t in ts) for w, ts in tot.items()}
    wall = {w: sum(t["wall"] for t in ts) for w, ts in tot.items()}
    return (
        f"Compute spent in this session ({len(tot['train'])} training and {len(tot['eval'])} evaluation "
        f"processes): **{cpu['train']:,.0f} CPU-s of training** ({wall['train']:,.0f} s wall) and "
        f"**{cpu['eval']:,.0f} CPU-s of evaluation** ({wall['eval']:,.0f} s wall), "
        f"{(cpu['train'] + cpu['eval']) / 60:.0f} CPU-minutes in all, plus `bench/rgb_tables.py` (the floor's "
        "FID, per-image ELBOs, the DLML mixture-mean FIDs). Runs are seeded and bit-reproducible on CPU with "
        "one thread.\n"
    )


def replace_section(page: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN generated:{name} -->\n).*?(<!-- END generated:{name} -->)", re.S)
    if not pattern.search(page):
        raise ValueError(f"the page has no generated:{name} markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), page)
