"""The paper's comparative claims on Mixed MNIST, checked against our numbers with noise-aware verdicts.

A claim is a list of orderings "cell a is better than cell b" (lower FID, or higher group purity),
each between two cells of the plan. Every cell's number carries a noise half-width: the larger of

- its sampling noise: the half-width of the bootstrap interval of its FID over the generated
  images (``fid_interval`` in the ledger), or the binomial 95% half-width of a purity, and
- the seed noise: the largest difference between the two seeds of the noise table's runs
  (FedVAE and +L+D federated, trained twice). Two seeds give one difference per model; we take
  that whole difference as the half-width of one run's seed noise (about 1.4 times the standard
  deviation it estimates), the conservative reading of so few seeds.

A number whose noise was not measured has an infinite half-width. Two cells are compared only at
the same scale: a pair with one cell at a reduced scale (a ``--fallback-scale`` stand-in) and one
at the page's keeps its claim ``pending``, and seed pairs count only at one scale. Each ordering gets
:func:`fissionvae.evaluation.noise.ordering_verdict` (the one rule of every page); a claim is
"same" when every ordering is "same", "differs" when any is "differs", otherwise
"inconclusive", and "pending" while a cell is missing. The size of each claim is computed too:
the relative gap ``1 - a / b`` of every ordering, for the paper's numbers and for ours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fissionvae.evaluation.noise import Measured, half_width, ordering_verdict
from fissionvae.studies.fission_plan import PAPER_TABLE7, SECOND_SEED, EvalSpec, Plan

Cell = tuple[str, str, str]  # (table key, row label, column)
T3 = ("FedVAE", "FissionVAE+L (wave)", "FissionVAE+D", "FissionVAE+L+D (wave)", "FissionVAE+H+L+D (learnable)")
FIXED_PRIORS = ("identical", "one-hot", "symmetrical", "random", "wave")
T6 = ("homogeneous (3-layer MLPs)", "deeper MLP (+2 layers in p(z1|z2) and p(x|z1))", "deeper MLP + conv p(x|z1)")
SWAP = ("pathway 1, each group's own prior", "pathway 1, the two groups' priors swapped")


@dataclass(frozen=True)
class Claim:
    """``better[i]`` beats ``worse[i]`` for every i, on ``metric`` ("fid": lower; "purity": higher)."""

    table: str
    text: str
    pairs: tuple[tuple[Cell, Cell], ...]
    metric: str = "fid"


def _fed(table: str, label: str, col: str = "federated") -> Cell:
    return (table, label, col)


CLAIMS = (
    Claim(
        "3",
        "Table 3: every FissionVAE variant beats FedVAE in federated FID",
        tuple((_fed("3", m), _fed("3", T3[0])) for m in T3[1:]),
    ),
    Claim(
        "3",
        "Table 3: decoder branches (+D) help more than group priors (+L), federated FID",
        ((_fed("3", T3[2]), _fed("3", T3[1])),),
    ),
    Claim(
        "3",
        "Table 3: centralised training beats federated for every model (FID)",
        tuple((_fed("3", m, "centralized"), _fed("3", m)) for m in T3),
    ),
    Claim(
        "3",
        "Figures 2/4: +D keeps the groups apart where federated FedVAE blends them (mean group purity)",
        ((_fed("3", T3[2]), _fed("3", T3[0])),),
        "purity",
    ),
    Claim(
        "5",
        "Table 5: with fixed z1 priors, +L+D beats +H+L+D (FID, each prior)",
        tuple((_fed("5", f"+L+D {p}"), _fed("5", f"+H+L+D {p}")) for p in FIXED_PRIORS),
    ),
    Claim(
        "5",
        "Table 5: the learnable prior is the best of the six +H+L+D priors (FID)",
        tuple((_fed("5", "+H+L+D learnable"), _fed("5", f"+H+L+D {p}")) for p in FIXED_PRIORS),
    ),
    Claim(
        "6",
        "Table 6: heterogeneous FashionMNIST branches do not improve overall FID "
        "(homogeneous < deeper < deeper + conv)",
        ((_fed("6", T6[0]), _fed("6", T6[1])), (_fed("6", T6[1]), _fed("6", T6[2]))),
    ),
    Claim(
        "7",
        "Table 7: the default pathway z2 -> z1 -> x is best, z1 -> x worst (FID)",
        (
            (_fed("7", PAPER_TABLE7[None][0]), _fed("7", PAPER_TABLE7["z1-z2-z1"][0])),
            (_fed("7", PAPER_TABLE7["z1-z2-z1"][0]), _fed("7", PAPER_TABLE7["z1"][0])),
        ),
    ),
    Claim(
        "10",
        "Figure 10: swapping the two groups' priors degrades generation (FID up)",
        ((_fed("10", SWAP[0]), _fed("10", SWAP[1])),),
    ),
)


def purity_of(n: dict) -> float:
    return float(np.mean(list(n["purity"].values())))


def purity_noise(n: dict) -> float:
    """Binomial 95% half-width of the mean group purity (groups' samples independent)."""
    counts = n.get("samples_per_group") or {}
    terms = [p * (1 - p) / counts[g] for g, p in n["purity"].items() if counts.get(g)]
    if len(terms) != len(n["purity"]):
        return math.inf
    return 1.96 * math.sqrt(sum(terms)) / len(terms)


class Noise:
    """The noise of each cell's numbers: sampling noise of the cell, and the seed noise of the study."""

    def __init__(
        self,
        plan: Plan,
        entry_of: Callable[[EvalSpec], dict | None],
        scale_of: Callable[[EvalSpec], str] = lambda ev: "",
    ):
        self.entry_of, self.scale_of = entry_of, scale_of
        self.seed = {"fid": math.inf, "purity": math.inf}
        self.seed_pairs: list[tuple[str, float, float]] = []  # (model, FID seed 1, FID seed 2)
        spreads: dict[str, list[float]] = {"fid": [], "purity": []}
        for t in plan.tables:
            if t.key != "noise":
                continue
            for r in t.rows:
                a, b = entry_of(r.evals["federated"]), entry_of(r.evals[SECOND_SEED])
                if a is None or b is None or a["numbers"]["fid"] is None or b["numbers"]["fid"] is None:
                    continue
                if scale_of(r.evals["federated"]) != scale_of(r.evals[SECOND_SEED]):
                    continue
                na, nb = a["numbers"], b["numbers"]
                self.seed_pairs.append((r.label, na["fid"], nb["fid"]))
                spreads["fid"].append(abs(na["fid"] - nb["fid"]))
                spreads["purity"].append(abs(purity_of(na) - purity_of(nb)))
        for k, v in spreads.items():
            if v:
                self.seed[k] = max(v)

    def measured(self, entry: dict, metric: str, prior_swap: bool = False) -> Measured:
        """The cell's number as lower-is-better, with its half-width (``prior_swap``: the cell is a swap)."""
        n = entry["numbers"]
        if metric == "purity":
            return Measured(-purity_of(n), max(purity_noise(n), self.seed["purity"]))
        interval = entry.get("fid_interval")
        sampling = half_width(tuple(interval)) if interval else math.inf
        if prior_swap and not entry.get("same_noise_as_unswapped"):
            sampling = math.inf  # an evaluation made before the swap drew the unswapped noise: not comparable
        return Measured(n["fid"], max(sampling, self.seed["fid"]))


def combine(verdicts: list[str]) -> str:
    if "differs" in verdicts:
        return "differs"
    return "same" if verdicts and all(v == "same" for v in verdicts) else "inconclusive"


def _size(pairs: list[tuple[float, float]]) -> str:
    """The range of relative gaps 1 - a/b (a the better-claimed number) in percent."""
    gaps = sorted(100 * (1 - a / b) for a, b in pairs if b)
    if not gaps:
        return "-"
    lo, hi = gaps[0], gaps[-1]
    return f"{lo:.0f}%" if round(lo) == round(hi) else f"{lo:.0f} to {hi:.0f}%"


def _fmt(x: float, metric: str) -> str:
    return f"{-x:.3f}" if metric == "purity" else f"{x:.2f}"


def check_claims(plan: Plan, cell_of: Callable[[Cell], EvalSpec | None], noise: Noise) -> list[dict]:
    """One dict per claim whose tables are in the plan: claim, paper, ours, size, noise, verdict."""
    tables = {t.key for t in plan.tables}
    out = []
    for c in CLAIMS:
        if c.table not in tables:
            continue
        paper_pairs: list[tuple[float, float]] = []
        ours: list[tuple[float, float]] = []
        verdicts: list[str] = []
        noises: list[float] = []
        pending, mixed = False, 0
        for better, worse in c.pairs:
            specs = cell_of(better), cell_of(worse)
            paper = [paper_fid(plan, cell) for cell in (better, worse)]
            if c.metric == "fid" and paper[0] is not None and paper[1] is not None:
                paper_pairs.append((paper[0], paper[1]))
            entries = [None if s is None else noise.entry_of(s) for s in specs]
            if None in entries or any(c.metric == "fid" and e["numbers"]["fid"] is None for e in entries if e):
                pending = True
                continue
            if len({noise.scale_of(s) for s in specs if s}) > 1:  # e.g. a paper-scale cell and a reduced stand-in
                pending, mixed = True, mixed + 1
                continue
            a, b = (noise.measured(e, c.metric, s.prior_swap) for e, s in zip(entries, specs, strict=True) if e and s)
            ours.append((a.value, b.value))
            noises.append(math.hypot(a.half_width, b.half_width))
            verdicts.append(ordering_verdict(a, b))
        shown = "; ".join(f"{_fmt(a, c.metric)} vs {_fmt(b, c.metric)}" for a, b in ours) or "-"
        shown += f" ({mixed} pair{'s' if mixed > 1 else ''} across scales not compared)" if mixed else ""
        worst = max(noises, default=math.inf)
        out.append(
            {
                "claim": c.text,
                "paper": "; ".join(f"{a:.2f} vs {b:.2f}" for a, b in paper_pairs) or "qualitative",
                "ours": shown,
                "size": f"paper {_size(paper_pairs)}, ours {_size(ours) if c.metric == 'fid' else '-'}",
                "noise": "not measured" if math.isinf(worst) else f"±{worst:.2f}",
                "verdict": "pending" if pending else combine(verdicts),
            }
        )
    return out


def paper_fid(plan: Plan, cell: Cell) -> float | None:
    """The paper's FID of a cell (Table 6: overall), or None."""
    for t in plan.tables:
        if t.key != cell[0]:
            continue
        for r in t.rows:
            if r.label == cell[1]:
                paper = r.paper.get(cell[2])
                if isinstance(paper, dict):
                    paper = paper.get("overall")
                return paper[0] if paper else None
    return None
