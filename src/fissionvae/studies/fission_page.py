"""The page of the FissionVAE study: ``<out>/mixed_mnist.md``, its HTML twin and ``<out>/mixed_mnist/``.

Built from the study's :class:`~fissionvae.studies.fission.Outcome` per evaluation cell:

* each table laid out like the paper's, every cell "ours (paper)", with per-group FID, group
  purity, sample counts; pending cells say so and the page names the command that completes them;
* the paper's claims checked against our numbers (same direction or not, with the numbers);
* a verdict section: the text of ``<out>/mixed_mnist/verdict.md`` when that file exists (written
  by whoever ran the study and read the numbers), else a placeholder saying so;
* the runs (rounds, sample passes, training and evaluation wall time, samples/s), loss curves,
  generation grids per model and group, the prior-swap figure, and ``study.json`` with every number.

The page is a list of blocks rendered twice, to Markdown and to static HTML, with the table
helpers of :mod:`fissionvae.evaluation.report`. Pictures are small greyscale PNGs.
"""

from __future__ import annotations

import html
import json
import os
import platform
import re
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fissionvae.api import load_run
from fissionvae.artifacts import generation_grid
from fissionvae.evaluation.report import _html_table
from fissionvae.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from fissionvae.studies.fission import (
    PAPER_FEDGAN,
    PAPER_TABLE7,
    EvalSpec,
    Outcome,
    Plan,
    StudyOptions,
    TableSpec,
    count_passes,
    planned_sample_passes,
)
from fissionvae.viz import image_grid, save_figure

if TYPE_CHECKING:
    from fissionvae.models.vae import FissionVAE

PAGE = "mixed_mnist"
GRID_IMAGES = 25  # generations per model and group in the figures (5 x 5)
GREY_LEVELS = 32  # the figures keep 32 grey levels: about half the PNG size, no visible change
MODE_SHORT = {"federated": "fed", "centralized": "central"}
Block = tuple  # ("h", level, text) | ("p", text) | ("ul", [items]) | ("table", headers, rows) | ("img", file, alt) | ("md", text)


# --------------------------------------------------------------------------- numbers


def numbers(result: dict, groups: list[str] | None = None) -> dict:
    """The page's numbers of one evaluation result (eval json); per-group dicts in ``groups`` order (eval.json sorts them)."""
    fid, cls, nll = result.get("fid"), result["classifier"], result["nll"]
    out = {
        "fid": fid["overall"] if fid else None,
        "fid_groups": {g: v["fid"] for g, v in fid["per_group"].items()} if fid else {},
        "is": cls["is_domain"]["mean"],
        "is_groups": {g: v.get("is_domain") for g, v in cls["per_group"].items()},
        "purity": {g: v["purity"] for g, v in cls["per_group"].items()},
        "nll": nll["overall"]["neg_elbo"]["nats_per_dim"],
        "nll_groups": {g: v["neg_elbo"]["nats_per_dim"] for g, v in nll["per_group"].items()},
        "iw_nll": nll["overall"]["iw"]["nats_per_dim"],
        "iw_k": nll["overall"]["iw"]["k"],
        "nll_images": nll["overall"]["images"],
        "generated": result["num_samples"],
        "samples_per_group": result.get("samples_per_group", {}),
        "fid_real": fid["real"] if fid else None,
        "reduced_count": result["reduced"],
        "eval_seconds": result.get("seconds"),
        "pathway": result.get("pathway"),
        "prior_swap": result.get("prior_swap", False),
    }
    for key in ("fid_groups", "is_groups", "purity", "nll_groups"):
        d = out[key]
        out[key] = {g: d[g] for g in (groups or []) if g in d} | d
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x + 0.0:.{digits}f}"


def pair(ours: float | None, paper: float | None, digits: int = 2) -> str:
    """'ours (paper)'; the paper's part left out when it has no number."""
    return _f(ours, digits) + ("" if paper is None else f" ({_f(paper, digits)})")


def _groups(d: dict, digits: int = 2) -> str:
    return "; ".join(f"{g} {_f(v, digits)}" for g, v in d.items()) or "-"


class Cells:
    """Text of the cells of one study, with the marks that say where a number comes from."""

    def __init__(self, outcomes: dict[EvalSpec, Outcome], opts: StudyOptions):
        self.outcomes, self.opts = outcomes, opts

    def get(self, ev: EvalSpec) -> dict | None:
        o = self.outcomes.get(ev)
        return numbers(o.result, o.cfg.group_names) if o is not None and o.done else None

    def mark(self, ev: EvalSpec) -> str:
        """'' for a number at the study's scale; a visible label for one from the fallback scale."""
        o = self.outcomes[ev]
        return "" if o.scale == self.opts.scale else f" [{o.scale.label}]"

    def pending(self, ev: EvalSpec) -> str:
        o = self.outcomes[ev]
        if o.run is None:
            return "pending (not started)"
        st = o.status or {}
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
        return [pair(fid, paper[0]) + self.mark(ev), pair(inc, paper[1]), pair(nll, paper[2], 3)]

    def detail(self, ev: EvalSpec) -> list[str]:
        """Per-group FID, purity, generated images, rounds and training wall time of the run."""
        n, o = self.get(ev), self.outcomes[ev]
        if n is None:
            return [self.pending(ev), "", "", "", ""]
        gen = f"{n['generated']:,}" + (" (reduced)" if n["reduced_count"] else "")
        st = o.status or {}
        rounds = f"{st.get('rounds_done', 0)}" + ("" if o.scale == self.opts.scale else f" [{o.scale.label}]")
        return [
            _groups(n["fid_groups"]),
            _groups(n["purity"], 3),
            gen,
            rounds,
            f"{float(st.get('wall_seconds', 0.0)) / 60:.1f}",
        ]


# --------------------------------------------------------------------------- tables


def table_blocks(t: TableSpec, cells: Cells) -> list[Block]:
    """The table laid out like the paper's, then its per-group detail."""
    if t.key == "3":
        headers = ["model"] + [f"{MODE_SHORT[m]} {q}" for m in t.columns for q in ("FID", "IS*", "NLL")]
        rows = [[r.label] + [c for m in t.columns for c in cells.triple(r.evals[m], r.paper[m])] for r in t.rows]
        rows = baseline_rows(cells.opts.baselines) + rows
    elif t.key == "5":
        headers = ["model", "z1 prior", "FID", "IS*"]
        rows = [r.label.split(" ", 1) + cells.triple(r.evals["federated"], r.paper["federated"])[:2] for r in t.rows]
    elif t.key == "6":
        headers = ["FashionMNIST branch"] + [
            f"{part} {q}" for part in ("MNIST", "Fashion", "overall") for q in ("FID", "IS*", "NLL")
        ]
        rows = [
            [r.label]
            + [
                c
                for part in ("mnist", "fashion", "overall")
                for c in cells.triple(r.evals["federated"], r.paper["federated"][part], part)
            ]
            for r in t.rows
        ]
    else:  # Table 7, Figure 10
        headers = ["pathway" if t.key == "7" else "sampling", "FID", "IS*"]
        rows = [[r.label] + cells.triple(r.evals["federated"], r.paper.get("federated", ()))[:2] for r in t.rows]
    detail_rows = [[r.label, MODE_SHORT[m], *cells.detail(r.evals[m])] for r in t.rows for m in t.columns]
    return [
        ("h", 2, t.title),
        ("table", headers, rows),
        ("p", "Per group (the paper reports overall numbers only, except Table 6):"),
        (
            "table",
            [
                "row",
                "mode",
                "FID per group",
                "group purity",
                "generated images",
                "rounds (central: epochs)",
                "train wall, min",
            ],
            detail_rows,
        ),
    ]


def _baseline_label(folder: Path, result: dict) -> tuple[str, dict]:
    """A baseline's Table 3 name and the paper's numbers for it: from its run config when it loads, else its eval.json name."""
    from fissionvae.config import ConfigError
    from fissionvae.evaluation.report import PAPER_TABLE3, model_family, model_label
    from fissionvae.runs import RunDir, RunDirError

    try:
        cfg = RunDir.open(folder).load_config()
        return model_label(cfg), PAPER_TABLE3.get(model_family(cfg.model), {})
    except (ConfigError, RunDirError, AttributeError):
        name = result.get("model") or result["name"]
        return name, PAPER_FEDGAN if "gan" in name.lower() else {}


def baseline_rows(baselines: tuple[Path, ...]) -> list[list[str]]:
    """Table 3 rows of other models' evaluated run folders (e.g. FedGAN), federated and centralised merged by name."""
    by_name: dict[str, dict[str, dict]] = {}
    papers: dict[str, dict] = {}
    for folder in baselines:
        path = Path(folder) / "eval.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"--baseline {folder}: no eval.json; evaluate the run first (fissionvae evaluate {folder})"
            )
        r = json.loads(path.read_text())
        name, paper = _baseline_label(Path(folder), r)
        by_name.setdefault(name, {})[r["mode"]] = r
        papers[name] = paper
    rows = []
    for name, modes in by_name.items():
        paper = papers[name]
        row = [f"{name} (baseline)"]
        for m in ("federated", "centralized"):
            r, p = modes.get(m), paper.get(m, (None, None, None))
            if r is None:
                row += ["-", "", ""]
                continue
            fid = r.get("fid", {}).get("overall")
            inc = r.get("classifier", {}).get("is_domain", {}).get("mean")
            nll = r.get("nll", {}).get("overall", {}).get("neg_elbo", {}).get("nats_per_dim")
            row += [pair(fid, p[0]), pair(inc, p[1]), pair(nll, p[2], 3)]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- claims


def _row(plan: Plan, table: str, label: str, col: str = "federated") -> EvalSpec | None:
    for t in plan.tables:
        if t.key == table:
            for r in t.rows:
                if r.label == label:
                    return r.evals[col]
    return None


def claims(plan: Plan, cells: Cells) -> list[list[str]]:
    """The paper's comparative claims on Mixed MNIST, each checked against our numbers.

    Returns rows: claim, the paper's numbers, ours, verdict ("same", "differs" or "pending").
    """

    def fid(table: str, label: str, col: str = "federated") -> float | None:
        ev = _row(plan, table, label, col)
        n = cells.get(ev) if ev is not None else None
        return None if n is None else n["fid"]

    def purity(table: str, label: str, col: str = "federated") -> float | None:
        ev = _row(plan, table, label, col)
        n = cells.get(ev) if ev is not None else None
        return None if n is None else float(np.mean(list(n["purity"].values())))

    t3 = ["FedVAE", "FissionVAE+L (wave)", "FissionVAE+D", "FissionVAE+L+D (wave)", "FissionVAE+H+L+D (learnable)"]
    hld = ["identical", "one-hot", "symmetrical", "random", "wave"]
    specs: list[tuple[str, str, str, Callable[[], list[float | None]], Callable[[list[float]], bool], str]] = [
        (
            "3",
            "Table 3: every FissionVAE variant beats FedVAE in federated FID",
            "117.03 vs 40.78-64.99",
            lambda: [fid("3", m) for m in t3],
            lambda v: all(x < v[0] for x in v[1:]),
            "FedVAE then the four variants",
        ),
        (
            "3",
            "Table 3: decoder branches (+D) help more than group priors (+L), federated",
            "+D 40.78 < +L 64.99",
            lambda: [fid("3", t3[2]), fid("3", t3[1])],
            lambda v: v[0] < v[1],
            "+D, +L",
        ),
        (
            "3",
            "Table 3: centralised training beats federated for every model (FID)",
            "e.g. FedVAE 40.59 vs 117.03",
            lambda: [x for m in t3 for x in (fid("3", m, "centralized"), fid("3", m))],
            lambda v: all(c < f for c, f in zip(v[::2], v[1::2])),
            "(central, fed) per model",
        ),
        (
            "3",
            "Figures 2/4: federated FedVAE blends the groups, +D keeps them apart (mean group purity)",
            "qualitative",
            lambda: [purity("3", t3[0]), purity("3", t3[2])],
            lambda v: v[0] < v[1],
            "FedVAE, +D",
        ),
        (
            "5",
            "Table 5: with fixed z1 priors, +H+L+D is worse than +L+D (FID, each prior)",
            "53.2-58.2 vs 40.8-43.3",
            lambda: [x for p in hld for x in (fid("5", f"+H+L+D {p}"), fid("5", f"+L+D {p}"))],
            lambda v: all(h > l for h, l in zip(v[::2], v[1::2])),
            "(+H+L+D, +L+D) per prior",
        ),
        (
            "5",
            "Table 5: the learnable prior is the best of the six +H+L+D priors",
            "47.72 vs 53.22-58.21",
            lambda: [fid("5", "+H+L+D learnable")] + [fid("5", f"+H+L+D {p}") for p in hld],
            lambda v: all(v[0] < x for x in v[1:]),
            "learnable, then the five fixed",
        ),
        (
            "6",
            "Table 6: heterogeneous FashionMNIST branches do not improve overall FID (homogeneous <= deeper <= deeper + conv)",
            "47.72 <= 48.79 <= 50.16",
            lambda: [fid("6", label) for label in [r.label for t in plan.tables if t.key == "6" for r in t.rows]],
            lambda v: v[0] <= v[1] <= v[2],
            "homogeneous, deeper, deeper + conv",
        ),
        (
            "7",
            "Table 7: the default pathway z2 -> z1 -> x is best, z1 -> x worst",
            "53.68 < 93.79 < 124.76",
            lambda: [fid("7", PAPER_TABLE7[p][0]) for p in (None, "z1-z2-z1", "z1")],
            lambda v: v[0] < v[1] < v[2],
            "z2 (default), z1-z2-z1, z1",
        ),
        (
            "10",
            "Figure 10: swapping the two groups' priors collapses generation (FID up)",
            "qualitative (images)",
            lambda: [
                fid("10", "pathway 1, each group's own prior"),
                fid("10", "pathway 1, the two groups' priors swapped"),
            ],
            lambda v: v[1] > v[0],
            "own priors, swapped",
        ),
    ]
    tables = {t.key for t in plan.tables}
    rows = []
    for table, claim, paper, values, holds, what in specs:
        if table not in tables:
            continue
        v = values()
        ours = ", ".join(_f(x, 3 if "purity" in claim else 2) for x in v)
        verdict = "pending" if not v or any(x is None for x in v) else ("same" if holds(v) else "differs")
        rows.append([claim, paper, f"{what}: {ours}", verdict])
    return rows


# --------------------------------------------------------------------------- runs


def runs_rows(plan: Plan, outcomes: dict[EvalSpec, Outcome]) -> tuple[list[list[str]], dict]:
    """One row per run: folder, tables, state, sample passes, wall times, samples/s; and the totals."""
    rows, totals = [], {"train_seconds": 0.0, "eval_seconds": 0.0, "passes": 0, "planned_passes": 0.0}
    seen = {}
    for o in outcomes.values():
        key = (o.cfg.name, str(o.run.path) if o.run else None)
        seen.setdefault(key, []).append(o)
    for (name, _), os_ in seen.items():
        o = os_[0]
        planned = planned_sample_passes(o.cfg)
        totals["planned_passes"] += planned
        eval_s = sum((x.result or {}).get("seconds", 0.0) for x in os_)
        totals["eval_seconds"] += eval_s
        if o.run is None:
            rows.append(
                [name, ",".join(plan.tables_of(o.spec.run)), "not started", f"0 / {planned:,.0f}", "-", "-", "-", "-"]
            )
            continue
        st = o.status or {}
        passes = count_passes(o.run, o.cfg)
        wall = float(st.get("wall_seconds", 0.0))
        totals["train_seconds"] += wall
        totals["passes"] += passes
        rate = f"{passes / wall:,.0f}" if wall > 0 else "-"
        rows.append(
            [
                f"`{o.run.path.name}`",
                ",".join(plan.tables_of(o.spec.run)),
                f"{st.get('state')} {st.get('rounds_done', 0)}/{o.cfg.effective_rounds}",
                f"{passes:,} / {planned:,.0f}",
                f"{wall / 60:.1f}",
                rate,
                f"{eval_s / 60:.1f}",
                ", ".join(x.spec.result_name for x in os_ if x.done) or "-",
            ]
        )
    return rows, totals


# --------------------------------------------------------------------------- pictures


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def mosaic(
    row_labels: list[str], col_labels: list[str], grids: list[list[torch.Tensor | None]], path: Path, nrow: int = 5
) -> Path:
    """Image grids in a labelled table (rows x columns) as one greyscale PNG; None cells stay blank."""
    from PIL import Image, ImageDraw

    arrays = [[None if g is None else image_grid(g, nrow) for g in row] for row in grids]
    present = [a for row in arrays for a in row if a is not None]
    ch = max((a.shape[0] for a in present), default=60)
    cw = max((a.shape[1] for a in present), default=60)
    font, pad, line = _font(), 6, 14
    wrapped = [textwrap.wrap(label, 24) or [""] for label in row_labels]
    draw = ImageDraw.Draw(Image.new("L", (1, 1)))
    label_w = 10 + int(max((draw.textlength(x, font=font) for w in wrapped for x in w), default=40))
    head = line * max(len(textwrap.wrap(c, max(8, cw // 7))) for c in col_labels) + pad
    img = Image.new("L", (label_w + len(col_labels) * (cw + pad), head + len(row_labels) * (ch + pad)), 255)
    draw = ImageDraw.Draw(img)
    for j, c in enumerate(col_labels):
        for k, text in enumerate(textwrap.wrap(c, max(8, cw // 7))):
            draw.text((label_w + j * (cw + pad), k * line), text, fill=0, font=font)
    for i, (lines, row) in enumerate(zip(wrapped, arrays)):
        y = head + i * (ch + pad)
        for k, text in enumerate(lines):
            draw.text((2, y + k * line), text, fill=0, font=font)
        for j, a in enumerate(row):
            if a is not None:
                step = 256 // GREY_LEVELS
                img.paste(Image.fromarray((a // step * step).astype(np.uint8)), (label_w + j * (cw + pad), y))
            else:
                draw.text((label_w + j * (cw + pad) + 4, y + ch // 2), "pending", fill=128, font=font)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(path, buf.getvalue())


class Models:
    """Trained models of finished runs, loaded once."""

    def __init__(self) -> None:
        self._cache: dict[str, FissionVAE] = {}

    def of(self, o: Outcome) -> FissionVAE | None:
        if o.run is None or (o.status or {}).get("state") != "finished":
            return None
        key = str(o.run.path)
        if key not in self._cache:
            self._cache[key] = load_run(o.run.path)[0]
        return self._cache[key]


def samples_of(models: Models, o: Outcome, group: int, swap: bool = False) -> torch.Tensor | None:
    """GRID_IMAGES generations of one group for a cell (its pathway; swapped prior for the swap cell)."""
    model = models.of(o)
    if model is None:
        return None
    partner = (group + 1) % model.num_groups if swap else None
    return generation_grid(model, group, GRID_IMAGES, o.cfg.seed, o.spec.pathway, partner)


def generation_figure(t: TableSpec, outcomes: dict[EvalSpec, Outcome], models: Models, path: Path) -> Path:
    """Rows of the table x (mode, group) columns of generations."""
    groups = next(iter(outcomes.values())).cfg.group_names
    cols = [(m, gi) for m in t.columns for gi in range(len(groups))]
    grids = [[samples_of(models, outcomes[r.evals[m]], gi, r.evals[m].prior_swap) for m, gi in cols] for r in t.rows]
    labels = [f"{MODE_SHORT[m]} {groups[gi]}" if len(t.columns) > 1 else groups[gi] for m, gi in cols]
    return mosaic([r.label for r in t.rows], labels, grids, path)


def loss_figure(t: TableSpec, outcomes: dict[EvalSpec, Outcome], path: Path) -> Path | None:
    """Per-group test loss per round of the table's runs (solid: federated, dashed: centralised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, tuple[int, Outcome]] = {}  # legend label -> (row index: the colour, outcome)
    for i, r in enumerate(t.rows):
        for m, ev in r.evals.items():
            o = outcomes[ev]
            if o.run is not None:
                runs.setdefault(f"{r.label} [{MODE_SHORT[m]}]", (i, o))
    if not runs:
        return None
    groups = next(iter(runs.values()))[1].cfg.group_names
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for label, (row, o) in runs.items():
        rounds = [m for m in o.run.metrics() if m.get("type") == "round"]
        for ax, g in zip(axes[0], groups):
            ys = [m.get(f"test/{g}/neg_elbo", np.nan) for m in rounds]
            ax.plot(
                [m["round"] for m in rounds],
                ys,
                "--" if o.cfg.mode == "centralized" else "-",
                color=colors[row % len(colors)],
                label=label,
                linewidth=1.2,
            )
    for ax, g in zip(axes[0], groups):
        ax.set_title(f"test negative ELBO, {g} (fixed test subset)", fontsize=10)
        ax.set_xlabel("round (centralised: epoch)")
        ax.set_ylabel("nats / image")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=2,
        fontsize=7,
        bbox_to_anchor=(0.5, -0.02 - 0.035 * ((len(labels) + 1) // 2)),
    )
    fig.tight_layout()
    out = save_figure(fig, path)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- rendering


def _inline_html(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\[([^\]]+)\]\((#[\w-]+)\)", r"<a href='\2'>\1</a>", out)
    out = re.sub(r"^_(.+)_$", r"<i>\1</i>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def tables_title(plan: Plan) -> str:
    """'Tables 3, 5, 6, 7 and Figure 10' for the plan's tables."""
    tables = [t.key for t in plan.tables if t.key != "10"]
    parts = ([f"Table{'s' if len(tables) > 1 else ''} " + ", ".join(tables)] if tables else []) + (
        ["Figure 10"] if any(t.key == "10" for t in plan.tables) else []
    )
    return " and ".join(parts)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; '|' inside cells is escaped (p(x|z1) stays readable)."""

    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]) + "\n"


def render_md(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            parts.append("#" * b[1] + " " + b[2] + "\n")
        elif kind == "p":
            parts.append(b[1] + "\n")
        elif kind == "ul":
            parts.append("\n".join(f"- {x}" for x in b[1]) + "\n")
        elif kind == "table":
            parts.append(md_table(b[1], b[2]))
        elif kind == "img":
            parts.append(f"![{b[2]}]({b[1]})\n")
        elif kind == "md":
            parts.append(b[1].rstrip() + "\n")
    return "\n".join(parts)


def render_html(blocks: list[Block], title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            slug = re.sub(r"[^\w]+", "-", b[2].lower()).strip("-")
            body.append(f"<h{b[1]} id='{slug}'>{_inline_html(b[2])}</h{b[1]}>")
        elif kind == "p":
            body.append(f"<p>{_inline_html(b[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            body.append(_html_table(b[1], [[c.replace("`", "") for c in r] for r in b[2]]))
        elif kind == "img":
            body.append(f"<p><img src='{html.escape(b[1])}' alt='{html.escape(b[2])}' style='max-width:100%'></p>")
        elif kind == "md":
            body.append(f"<div style='white-space:pre-wrap'>{_inline_html(b[1])}</div>")
    style = "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px;margin-bottom:1em}td,th{border:1px solid #bbb;padding:4px;vertical-align:top}code{background:#f3f3f3}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"


# --------------------------------------------------------------------------- page


def write_page(plan: Plan, outcomes: dict[EvalSpec, Outcome], opts: StudyOptions, seconds: float) -> Path:
    """Draw the figures and write ``<out>/mixed_mnist.md``, ``.html`` and ``<out>/mixed_mnist/study.json``; return the .md."""
    out = opts.out_dir
    assets = out / PAGE
    assets.mkdir(parents=True, exist_ok=True)
    cells, models, scale = Cells(outcomes, opts), Models(), opts.scale
    done = sum(o.done for o in outcomes.values())
    label = "the paper's scale" if not scale.reduced else f"REDUCED preset `{scale.label}`"
    title = f"FissionVAE on Mixed MNIST: {tables_title(plan)}" + (
        "" if not scale.reduced else f" [REDUCED: {scale.label}]"
    )
    gen = opts.num_samples or scale.num_samples()
    blocks: list[Block] = [("h", 1, title)]
    if scale.reduced:
        blocks.append(
            (
                "p",
                f"**This page is a reduced-scale study (`{scale.label}`), not the paper's setting: fewer rounds/epochs and fewer generated images (see [Scale](#scale)). Its numbers are not comparable with the paper's.**",
            )
        )
    if opts.test_size is not None:
        blocks.append(
            (
                "p",
                f"**Evaluated against a seeded subset of {opts.test_size:,} test images per group (`--test-size`), not the full test sets: a reduced protocol.**",
            )
        )
    blocks += [
        (
            "p",
            f"Written by `{opts.command()}` at {label}: {done} of {len(outcomes)} evaluation cells done, {len(plan.runs)} runs. Machine: {machine()}.",
        ),
        (
            "p",
            "Every cell reads **ours (paper)**. `pending` cells are completed by running the same command again (it reuses finished runs, resumes interrupted ones from their last round and skips finished evaluations)."
            + (
                ""
                if opts.fallback_scale is None
                else f" Cells marked `[{opts.fallback_scale.label}]` are not done at this scale yet and show the finished `{opts.fallback_scale.label}` preset's number instead (`{' '.join(opts.fallback_scale.cli_args())}`); they are not the paper's scale."
            ),
        ),
        ("h", 2, "Where we agree with the paper and where not"),
    ]
    verdict = assets / "verdict.md"
    blocks.append(
        ("md", verdict.read_text())
        if verdict.is_file()
        else (
            "p",
            f"_Verdict not written yet: whoever runs the study reads the numbers below and writes it to `{verdict}`; rerunning the command includes it here._",
        )
    )
    claim_rows = claims(plan, cells)
    blocks += [
        (
            "p",
            "The paper's comparative claims, checked mechanically against our numbers (same = our numbers order the same way):",
        ),
        ("table", ["claim", "paper", "ours", "same direction?"], claim_rows),
    ]
    figures = {}
    for t in plan.tables:
        section = table_blocks(t, cells)
        if scale.reduced:  # every table heading says it, not only the page's title
            section[0] = ("h", 2, f"{t.title} [REDUCED: {scale.label}]")
        blocks += section
        fig = generation_figure(t, outcomes, models, assets / f"generations_table{t.key}.png")
        figures[f"generations_table{t.key}"] = fig.name
        caption = (
            f"Generations ({GRID_IMAGES} per model and group, the run seed's sample stream"
            + (", the same noise with and without the swap" if t.key == "10" else "")
            + "):"
        )
        blocks += [("p", caption), ("img", f"{PAGE}/{fig.name}", f"generations, {t.title}")]
        if t.key not in ("7", "10"):
            loss = loss_figure(t, outcomes, assets / f"loss_table{t.key}.png")
            if loss is not None:
                figures[f"loss_table{t.key}"] = loss.name
                blocks += [
                    (
                        "p",
                        "Test negative ELBO per round and group (nats/image on the fixed test subset of `eval.test_per_group` images per group; solid: federated, dashed: centralised, one colour per row):",
                    ),
                    ("img", f"{PAGE}/{loss.name}", f"loss curves, {t.title}"),
                ]
    rows, totals = runs_rows(plan, outcomes)
    blocks += [
        ("h", 2, "Runs"),
        (
            "table",
            [
                "run folder",
                "tables",
                "state (rounds)",
                "sample passes done / expected",
                "train wall, min",
                "samples/s",
                "eval wall, min",
                "evaluations",
            ],
            rows,
        ),
        (
            "p",
            f"Totals: {totals['passes']:,} of {totals['planned_passes']:,.0f} expected sample passes; training {totals['train_seconds'] / 3600:.2f} h (sum of round times), evaluation {totals['eval_seconds'] / 3600:.2f} h; this call {seconds / 60:.1f} min.",
        ),
    ]
    blocks += notes(opts, gen)
    md = render_md(blocks)
    atomic_write_text(out / f"{PAGE}.md", md)
    atomic_write_text(out / f"{PAGE}.html", render_html(blocks, title))
    dump = {
        "command": opts.command(),
        "scale": scale.label,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "figures": figures,
        "totals": totals,
        "claims": [dict(zip(("claim", "paper", "ours", "verdict"), r)) for r in claim_rows],
        "cells": {
            ev.key: {
                "run": str(o.run.path) if o.run else None,
                "config": o.cfg.name,
                "scale": o.scale.label,
                "status": o.status,
                "numbers": cells.get(ev),
            }
            for ev, o in outcomes.items()
        },
    }
    atomic_write_json(assets / "study.json", dump)
    return out / f"{PAGE}.md"


def notes(opts: StudyOptions, gen: int | None) -> list[Block]:
    """How the numbers were made: protocol, units, scale, commands."""
    s = opts.scale
    return [
        ("h", 2, "How the numbers were made"),
        (
            "ul",
            [
                f"FID: TF-ported FID Inception-v3; overall = all generated images vs the union of both test sets, per group = a group's samples vs its test set{'' if opts.test_size is None else f' (reduced: a seeded subset of {opts.test_size:,} test images per group, also the NLL test set)'}. Generated images per evaluation: {'20,000 (the paper protocol: as many as the test images, each group its share)' if gen is None else f'{gen:,} (reduced; FID is biased upwards at small counts, about c/N: compare only numbers with the same count)'}.",
                "IS*: the tool's domain classifier (20 classes: 10 digits + 10 clothes), not the ImageNet Inception head the paper used; its scale differs from the paper's IS, so only the ordering is comparable.",
                "Group purity: share of a group's samples that the domain classifier places in that group's classes (the blending of the paper's Figures 2 and 4 as a number).",
                f"NLL: negative ELBO in nats per pixel on each group's test set (the paper does not state its units; its 0.18-0.30 are of that size), IW bound with K={opts.iw_samples or s.iw_samples()} in study.json.",
                "Table 5's '+L+D identical' row is FissionVAE+D (identical priors = no +L), the same run as Table 3's; '+H+L+D learnable' is Table 3's +H+L+D and Table 6's homogeneous row; Table 7 and Figure 10 evaluate the '+H+L+D wave' run of Table 5 with other pathways.",
                "Figure 10: pathway 1 (z1 ~ p_g(z1) -> q(z2|z1) -> p(z1|z2) -> p(x|z1)) where group g's z1 is drawn from the other group's prior and decoded by g's own branch.",
                "Wall times are those of the machine that ran each run (shared CPUs slow everything down); training time sums the round times.",
            ],
        ),
        ("h", 2, "Scale"),
        (
            "p",
            (
                "Paper setting (`--scale 1`): 20 clients (10 per group, 6,000 images each), Bernoulli(0.5) participation, 70 rounds x 5 local epochs, batch 32, Adam lr 1e-3; centralised 70 epochs; 20,000 generated images per evaluation, IW K=100. "
                "`--scale s` keeps the data, model and round structure and trains round(70 s) rounds (centralised: epochs), generates round(20,000 s) images and uses K=round(100 s); run names end in `-reduced-s<s>`. "
                f"This page: `{s.label}`."
            ),
        ),
    ]
