"""A few human-readable lines of an ``eval.json`` result."""

from __future__ import annotations


def summary_lines(result: dict) -> list[str]:
    """A few human-readable lines of an eval.json result."""
    subset = f", test subset of {result['test_size']} per group" if result.get("test_size") else ""
    flag = f" (REDUCED sample count{subset}: not comparable with full-protocol numbers)" if result["reduced"] else ""
    lines = [
        f"{result['name']} [{result['mode']}], round {result['round']}/{result['rounds_planned']}, "
        f"{result['num_samples']} generated images{flag}"
    ]
    if "fid" in result:
        per = ", ".join(f"{k} {v['fid']:.2f}" for k, v in result["fid"]["per_group"].items())
        quick = "" if result["fid"].get("paper_comparable", True) else " [bf16 features: a quick look, not comparable]"
        lines.append(f"FID overall {result['fid']['overall']:.2f} (per group: {per}){quick}")
    c = result["classifier"]
    lines.append(
        f"IS (domain classifier) {c['is_domain']['mean']:.2f} +- {c['is_domain']['std']:.2f}; purity "
        + ", ".join(f"{k} {v['purity']:.3f}" for k, v in c["per_group"].items())
    )
    coll = result.get("collapse")
    if coll:
        verdict = "COLLAPSED (" + "; ".join(coll["reasons"]) + ")" if coll["collapsed"] else "not collapsed"
        lines.append(
            f"mode collapse: {verdict}; near-duplicates {coll['near_duplicates']['share']:.3f} of "
            f"{coll['near_duplicates']['images']} (real "
            f"{coll['near_duplicates'].get('real_share', float('nan')):.3f}), class coverage "
            f"{coll['coverage']['coverage_entropy_normalised']:.3f}, "
            f"{coll['coverage']['classes_covered']}/{coll['coverage']['classes']} classes"
        )
    if "skipped" in result["nll"]:
        lines.append(f"NLL: skipped ({result['nll']['skipped']})")
        return lines
    n = result["nll"]["overall"]
    lines.append(
        f"NLL: -ELBO {n['neg_elbo']['nats_per_dim']:.4f} nats/dim ({n['neg_elbo']['bits_per_dim']:.4f} bits/dim), IW "
        f"K={n['iw']['k']} {n['iw']['nats_per_dim']:.4f} nats/dim"
    )
    return lines
