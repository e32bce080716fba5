"""The tables of the FissionVAE study's page, laid out like the paper's, from the ledger's entries.

Every number cell reads **ours (paper)**; each row says the scale its cells were measured at;
every table ends with the mean-image floor (:mod:`fissionvae.evaluation.floor_eval`), so a reader
sees at once whether a model learned anything. Table 6 also gets its NLL in every unit (nats/dim,
nats/image, bits/dim) beside the paper's number, whose unit the paper does not state, and a
column that says where the paper's own numbers are doubtful (computed, not written by hand).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fissionvae.studies.fission_figures import short
from fissionvae.studies.fission_ledger import Ledger, Outcome
from fissionvae.studies.fission_options import StudyOptions
from fissionvae.studies.fission_plan import PAPER_FEDGAN, EvalSpec, TableSpec
from fissionvae.studies.page_render import Block

FLOOR_LABEL = "mean-image floor (no learning)"
PARTS = ("mnist", "fashion", "overall")


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x + 0.0:.{digits}f}"


def pair(ours: float | None, paper: float | None, digits: int = 2) -> str:
    """'ours (paper)'; the paper's part left out when it has no number."""
    return _f(ours, digits) + ("" if paper is None else f" ({_f(paper, digits)})")


def _groups(d: dict, digits: int = 2) -> str:
    return "; ".join(f"{g} {_f(v, digits)}" for g, v in d.items()) or "-"


class Cells:
    """Text of the cells of one study, with the marks that say where a number comes from."""

    def __init__(self, outcomes: dict[EvalSpec, Outcome], opts: StudyOptions, ledger: Ledger):
        self.outcomes, self.opts, self.runs, self.baselines = outcomes, opts, ledger.runs, ledger.baselines

    def get(self, ev: EvalSpec) -> dict | None:
        o = self.outcomes.get(ev)
        return o.entry["numbers"] if o is not None and o.entry is not None else None

    def scale(self, ev: EvalSpec) -> str:
        o = self.outcomes[ev]
        return o.scale.label if o.done else "-"

    def pending(self, ev: EvalSpec) -> str:
        o = self.outcomes[ev]
        st = o.status or self.runs.get(o.cfg.name)
        if st is None:
            return "pending (not started)"
        if st.get("state") == "finished":
            return "pending (not evaluated)"
        return f"pending (round {st.get('rounds_done', 0)}/{o.cfg.effective_rounds})"

    def triple(self, ev: EvalSpec, paper: tuple, key: str = "overall") -> list[str]:
        """FID, IS, NLL cells 'ours (paper)' for one evaluation (``key``: overall or a group name)."""
        n = self.get(ev)
        paper = tuple(paper) + (None,) * (3 - len(paper))
        if n is None:
            return [self.pending(ev), "", ""]
        fid = n["fid"] if key == "overall" else n["fid_groups"].get(key)
        inc = n["is"] if key == "overall" else n["is_groups"].get(key)
        nll = n["nll"] if key == "overall" else n["nll_groups"].get(key)
        return [pair(fid, paper[0]), pair(inc, paper[1]), pair(nll, paper[2], 3)]

    def detail(self, ev: EvalSpec) -> list[str]:
        """Per-group FID, purity, generated images, rounds and training wall time of the run."""
        n, o = self.get(ev), self.outcomes[ev]
        if n is None:
            return [self.pending(ev), "", "", "", ""]
        gen = f"{n['generated']:,}" + (" (reduced)" if n["reduced_count"] else "")
        st = self.runs.get(o.cfg.name) or o.status or {}
        return [
            _groups(n["fid_groups"]),
            _groups(n["purity"], 3),
            gen,
            f"{st.get('rounds_done', 0)} [{o.scale.label}]",
            f"{float(st.get('wall_seconds', 0.0)) / 60:.1f}",
        ]


def floor_cells(floor: dict | None, key: str = "overall") -> list[str]:
    """FID, IS, NLL of the mean-image floor (IS: the floor has one image per group, no IS is meaningful)."""
    if floor is None:
        return ["not computed", "", ""]
    fid = floor.get("fid") or {}
    fid_value = fid.get("overall") if key == "overall" else fid.get("per_group", {}).get(key)
    nll = floor["nll_overall_nats_per_dim"] if key == "overall" else floor["nll"].get(key, {}).get("nats_per_dim")
    return [_f(fid_value), "-", _f(nll, 3)]


def table_blocks(t: TableSpec, cells: Cells, floor: dict | None) -> list[Block]:
    """The table laid out like the paper's (with its floor row), then its per-group detail."""

    def scales(r) -> str:
        return ", ".join(f"{short(m)} {cells.scale(r.evals[m])}" for m in t.columns)

    blocks: list[Block] = []
    if t.key == "3":
        headers = ["model"] + [f"{short(m)} {q}" for m in t.columns for q in ("FID", "IS*", "NLL")] + ["scale"]
        rows = [
            [r.label] + [c for m in t.columns for c in cells.triple(r.evals[m], r.paper[m])] + [scales(r)]
            for r in t.rows
        ]
        rows = baseline_rows(cells.baselines) + rows + [[FLOOR_LABEL, *floor_cells(floor) * len(t.columns), "-"]]
    elif t.key == "6":
        headers = ["FashionMNIST branch"] + [f"{p} {q}" for p in PARTS for q in ("FID", "IS*", "NLL")]
        headers += ["scale", "paper doubtful?"]
        rows = [
            [r.label]
            + [c for p in PARTS for c in cells.triple(r.evals["federated"], r.paper["federated"][p], p)]
            + [scales(r), paper_doubts(r.paper["federated"], floor)]
            for r in t.rows
        ]
        rows.append([FLOOR_LABEL, *[c for p in PARTS for c in floor_cells(floor, p)], "-", "-"])
        blocks = table6_nll_blocks(t, cells, floor)
    else:  # Tables 5 and 7, Figure 10, the noise table: FID and IS* per column
        first = {"5": ["model", "z1 prior"], "7": ["pathway"], "10": ["sampling"]}.get(t.key, ["model"])
        headers = first + [f"{short(m)} {q}" if len(t.columns) > 1 else q for m in t.columns for q in ("FID", "IS*")]
        headers.append("scale")
        rows = [
            (r.label.split(" ", 1) if t.key == "5" else [r.label])
            + [c for m in t.columns for c in cells.triple(r.evals[m], r.paper.get(m, ()))[:2]]
            + [scales(r)]
            for r in t.rows
        ]
        rows.append([FLOOR_LABEL] + [""] * (len(first) - 1) + floor_cells(floor)[:2] * len(t.columns) + ["-"])
    detail_rows = [[r.label, short(m), *cells.detail(r.evals[m])] for r in t.rows for m in t.columns]
    detail_headers = ["row", "column", "FID per group", "group purity", "generated images", "rounds [scale]"]
    return [
        ("h", 2, t.title),
        ("table", headers, rows),
        *blocks,
        ("p", "Per group (the paper reports overall numbers only, except Table 6):"),
        ("table", [*detail_headers, "train wall, min"], detail_rows),
    ]


def paper_doubts(paper: dict, floor: dict | None) -> str:
    """Where a Table 6 row of the paper cannot be right, checked from its own numbers and our floor."""
    nll = {p: paper[p][2] for p in PARTS}
    out = []
    if nll["overall"] < min(nll["mnist"], nll["fashion"]):
        out.append(f"overall NLL {nll['overall']:.2f} below both groups' ({nll['mnist']:.2f}, {nll['fashion']:.2f})")
    if floor is not None and nll["fashion"] > floor["nll"].get("fashion", {}).get("nats_per_dim", math.inf):
        fl = floor["nll"]["fashion"]["nats_per_dim"]
        out.append(f"Fashion NLL {nll['fashion']:.2f} above the mean-image floor's {fl:.3f} nats/dim")
    return "; ".join(out) or "-"


def table6_nll_blocks(t: TableSpec, cells: Cells, floor: dict | None) -> list[Block]:
    """Table 6's NLL per group in nats/dim, nats/image and bits/dim beside the paper's number (unit unstated)."""
    headers = ["FashionMNIST branch"]
    for g in ("mnist", "fashion"):
        headers += [f"{g} ours nats/dim", f"{g} ours nats/image", f"{g} ours bits/dim", f"{g} paper (nats/dim?)"]
    rows = []
    for r in t.rows:
        n = cells.get(r.evals["federated"])
        row = [r.label]
        for g in ("mnist", "fashion"):
            v = None if n is None else n["nll_groups"].get(g)
            row += units(v) + [_f(r.paper["federated"][g][2], 2)]
        rows.append(row)
    if floor is not None:
        row = [FLOOR_LABEL]
        for g in ("mnist", "fashion"):
            row += units(floor["nll"].get(g, {}).get("nats_per_dim")) + ["-"]
        rows.append(row)
    return [
        (
            "p",
            "Table 6's NLL in every unit. The paper does not state its NLL unit; its numbers are of the size of "
            "nats per pixel, so we read them as nats/dim. Where the paper's row is doubtful, the column above says "
            "why: an overall NLL below both groups' cannot be their average, and a FashionMNIST NLL above the "
            "mean-image model's means that model is worse than predicting the mean image.",
        ),
        ("table", headers, rows),
    ]


def units(nats_per_dim: float | None, dims: int = 784) -> list[str]:
    """nats/dim, nats/image, bits/dim of one NLL (28 x 28 greyscale: 784 dims)."""
    if nats_per_dim is None:
        return ["-", "-", "-"]
    return [_f(nats_per_dim, 3), _f(nats_per_dim * dims, 1), _f(nats_per_dim / math.log(2), 3)]


def baseline_rows(baselines: dict[str, dict]) -> list[list[str]]:
    """Table 3 rows of other models (e.g. FedGAN) from the ledger's baselines (:func:`baseline_entries`)."""
    rows = []
    for name, b in baselines.items():
        row = [f"{name} (baseline)"]
        for m in ("federated", "centralized"):
            r, p = b["modes"].get(m), b["paper"].get(m, (None, None, None))
            row += ["-", "", ""] if r is None else [pair(r["fid"], p[0]), pair(r["is"], p[1]), pair(r["nll"], p[2], 3)]
        rows.append([*row, "own budget (see verdict)"])
    return rows


def _baseline_label(folder: Path, result: dict) -> tuple[str, dict[str, Any]]:
    """A baseline's Table 3 name and the paper's numbers: from its run config when it loads, else its eval.json."""
    from fissionvae.config import ConfigError
    from fissionvae.evaluation.report import PAPER_TABLE3, model_family, model_label
    from fissionvae.runs import RunDir, RunDirError

    try:
        cfg = RunDir.open(folder).load_config()
        return model_label(cfg), PAPER_TABLE3.get(model_family(cfg.model), {})
    except (ConfigError, RunDirError, AttributeError):
        name = result.get("model") or result["name"]
        return name, PAPER_FEDGAN if "gan" in name.lower() else {}


def baseline_entries(baselines: tuple[Path, ...]) -> dict[str, dict]:
    """Ledger entries of other models' evaluated run folders, federated and centralised merged by name."""
    out: dict[str, dict] = {}
    for folder in baselines:
        path = Path(folder) / "eval.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"--baseline {folder}: no eval.json; evaluate the run first (fissionvae evaluate {folder})"
            )
        r = json.loads(path.read_text())
        name, paper = _baseline_label(Path(folder), r)
        entry = out.setdefault(name, {"paper": {m: list(v) for m, v in paper.items()}, "modes": {}})
        entry["modes"][r["mode"]] = {
            "fid": r.get("fid", {}).get("overall"),
            "is": r.get("classifier", {}).get("is_domain", {}).get("mean"),
            "nll": r.get("nll", {}).get("overall", {}).get("neg_elbo", {}).get("nats_per_dim"),
            "folder": str(folder),
            "generated": r.get("num_samples"),
        }
    return out
