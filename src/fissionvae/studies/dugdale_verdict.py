"""The Dugdale study's verdict: does the federated model match the centralised one, beyond noise?

Dugdale's claim is a match, so each of FID and the negative ELBO gets :func:`match_verdict` (the one
noise-aware rule of evaluation.noise) with its measured noise and a tolerance: ``same`` when the gap
is within both the noise and the tolerance, ``differs`` when it exceeds both, else
``inconclusive``. The study's verdict is ``same`` only when both are, ``differs`` when either is.

A match between models that have not learned the images says nothing, so the verdict also
records whether both models beat the floor (the mean-image model's NLL on the same test images)
with their reconstruction term; when either does not, the sentence says so first.
"""

from __future__ import annotations

from fissionvae.evaluation.noise import Measured, match_verdict

FID_TOLERANCE = 0.10  # federated and centralised FID within 10% of their mean ...
NLL_TOLERANCE = 0.02  # ... and their negative ELBO within 2%, to count as the same


def _measured(n: dict, key: str) -> Measured | None:
    return None if key not in n else Measured(n[key], n.get(f"{key}_half_width", 0.0))


def verdict(numbers: dict[str, dict]) -> dict:
    """Per-metric and overall verdicts of "federated matches centralised", and whether both beat the floor."""
    c, f = numbers["centralized"], numbers["federated"]
    metrics = {}
    for key, tol in (("fid", FID_TOLERANCE), ("neg_elbo", NLL_TOLERANCE)):
        a, b = _measured(c, key), _measured(f, key)
        if a is not None and b is not None:
            metrics[key] = {"verdict": match_verdict(a, b, tol), "gap": b.value - a.value, "tolerance": tol}
    verdicts = [m["verdict"] for m in metrics.values()]
    overall = "differs" if "differs" in verdicts else "same" if all(v == "same" for v in verdicts) else "inconclusive"
    floor = numbers.get("floor", {}).get("nll")
    learned = floor is not None and all(n.get("final_test_recon", floor) < floor for n in (c, f))
    return {"verdict": overall, "metrics": metrics, "beat_floor": learned, "floor_nll": floor}


def _part(name: str, key: str, v: dict, c: dict, f: dict, unit: str = "") -> str:
    m = v["metrics"][key]
    hw = f"± {f.get(key + '_half_width', 0):.2f}", f"± {c.get(key + '_half_width', 0):.2f}"
    side = ""  # both metrics are lower-is-better: a difference has a winner, and the sentence names it
    if m["verdict"] == "differs":
        side = ", the federated model's lower (better)" if m["gap"] < 0 else ", the federated model's higher (worse)"
    return (
        f"{name} {f[key]:.2f} {hw[0]} vs {c[key]:.2f} {hw[1]}{unit}: {m['verdict']}{side} "
        f"(tolerance {m['tolerance']:.0%} of their mean)"
    )


def verdict_sentence(v: dict, numbers: dict[str, dict], smoke_test: bool = False) -> str:
    """One plain sentence: smoke-test and floor warnings first, then the verdict and its two comparisons."""
    c, f = numbers["centralized"], numbers["federated"]
    words = {
        "same": "matched the centralised one within noise and tolerance",
        "differs": "did not match the centralised one (a gap beyond noise and tolerance)",
        "inconclusive": "neither matched nor clearly differed from the centralised one (inconclusive)",
    }
    parts = []
    if "fid" in v["metrics"]:
        parts.append(_part("FID", "fid", v, c, f))
    parts.append(_part("-ELBO", "neg_elbo", v, c, f, " nats/image"))
    head = ""
    if smoke_test:
        head += (
            "Smoke test only (a few hundred images, a couple of rounds): this verdict says nothing about "
            "Dugdale's claim. "
        )
    if not v["beat_floor"]:
        head += (
            f"At least one model's reconstruction term is not below the mean-image floor ({v['floor_nll']:.1f} "
            "nats/image): "
            "the models have not learned the digits, so the comparison says little. "
        )
    return f"{head}The federated model {words[v['verdict']]}: {'; '.join(parts)}."
