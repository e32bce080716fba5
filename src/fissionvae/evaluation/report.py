"""``fissionvae report``: several evaluated runs side by side, as Markdown and static HTML.

The table follows Table 3 of the FissionVAE paper: one row per model, column groups for
federated and centralised training, each with overall FID, per-group FID, IS (domain
classifier), group purity and NLL; the paper's number stands beside ours where it exists.
Every cell says how many generated images (FID/IS/purity) or test images (NLL) it used.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import ModelConfig, RunConfig
from fissionvae.io import atomic_write_text
from fissionvae.runs import RunDir, RunDirError
from fissionvae.viz import save_figure

# Table 3 (Mixed MNIST): model -> mode -> (FID, IS, NLL)
PAPER_TABLE3: dict[str, dict[str, tuple[float, float, float | None]]] = {
    "FedGAN (DCGAN)": {"federated": (118.52, 2.39, None), "centralized": (91.08, 3.18, None)},
    "FedVAE": {"federated": (117.03, 2.29, 0.23), "centralized": (40.59, 3.62, 0.18)},
    "FissionVAE+L": {"federated": (64.99, 2.83, 0.22), "centralized": (39.27, 3.03, 0.18)},
    "FissionVAE+D": {"federated": (40.78, 3.01, 0.26), "centralized": (34.76, 3.05, 0.25)},
    "FissionVAE+L+D": {"federated": (42.11, 3.04, 0.25), "centralized": (34.39, 3.08, 0.20)},
    "FissionVAE+H+L+D": {"federated": (47.72, 2.98, 0.30), "centralized": (28.82, 3.16, 0.24)},
}
# Table 5 (Mixed MNIST, federated): (model, prior) -> (FID, IS)
PAPER_TABLE5 = {
    ("FissionVAE+L+D", "identical"): (40.78, 3.01),
    ("FissionVAE+L+D", "one-hot"): (42.01, 3.02),
    ("FissionVAE+L+D", "symmetrical"): (41.79, 2.95),
    ("FissionVAE+L+D", "random"): (43.26, 3.00),
    ("FissionVAE+L+D", "wave"): (42.11, 3.04),
    ("FissionVAE+H+L+D", "identical"): (55.91, 2.96),
    ("FissionVAE+H+L+D", "one-hot"): (53.22, 2.97),
    ("FissionVAE+H+L+D", "symmetrical"): (58.21, 3.03),
    ("FissionVAE+H+L+D", "random"): (53.99, 2.94),
    ("FissionVAE+H+L+D", "wave"): (53.68, 2.94),
    ("FissionVAE+H+L+D", "learnable"): (47.72, 2.98),
}
MODES = ("federated", "centralized")
# the z1 prior of each Table 3 row: a model with another prior is not that row (Table 5 has the federated ones)
TABLE3_PRIORS = {
    "FedVAE": "identical",
    "FissionVAE+L": "wave",
    "FissionVAE+D": "identical",
    "FissionVAE+L+D": "wave",
    "FissionVAE+H+L+D": "learnable",
}


def model_family(m: ModelConfig) -> str:
    """The Table 1 name of a model config (Table 3's name for the DCGAN baseline)."""
    if m.kind == "dcgan":
        return "FedGAN (DCGAN)"
    if m.hierarchical:
        return "FissionVAE+H+L+D"
    if m.decoder_branches:
        return "FissionVAE+D" if m.prior == "identical" else "FissionVAE+L+D"
    return "FedVAE" if m.prior == "identical" else "FissionVAE+L"


def model_label(cfg: RunConfig) -> str:
    family = model_family(cfg.model)
    hetero = [g.name for g in cfg.data.groups if g.decoder is not None]
    extra = f", custom decoder: {'/'.join(hetero)}" if hetero else ""
    return (
        family
        if family in ("FedVAE", "FissionVAE+D", "FedGAN (DCGAN)") and not extra
        else f"{family} ({cfg.model.prior}{extra})"
    )


def paper_numbers(cfg: RunConfig) -> tuple[float, float, float | None] | None:
    """(FID, IS, NLL) the paper reports for this model and mode on Mixed MNIST, if any."""
    family = model_family(cfg.model)
    if any(g.decoder is not None for g in cfg.data.groups) or {g.dataset for g in cfg.data.groups} != {
        "mnist",
        "fashion-mnist",
    }:
        return None
    if family in TABLE3_PRIORS and cfg.model.prior != TABLE3_PRIORS[family]:
        # not Table 3's model (e.g. a centralised +H+L+D wave is not the learnable row): Table 5, federated only
        table5 = PAPER_TABLE5.get((family, cfg.model.prior)) if cfg.mode == "federated" else None
        return None if table5 is None else (*table5, None)
    return PAPER_TABLE3.get(family, {}).get(cfg.mode)


@dataclass
class RunEntry:
    run: RunDir
    cfg: RunConfig
    result: dict
    wall_seconds: float
    checkpoint_round: int | None = None  # the round of the checkpoint when its weights are not the evaluated ones

    @property
    def stale(self) -> bool:
        """Whether eval.json was computed from other weights than the run's checkpoint holds now."""
        return self.checkpoint_round is not None

    def warning(self) -> str:
        return (
            f"{self.run.path.name}: eval.json is of round {self.result.get('round')} but the checkpoint is at round "
            f"{self.checkpoint_round} (other weights); re-run `fissionvae evaluate {self.run.path}`"
        )

    @classmethod
    def load(cls, path: str | Path) -> RunEntry:
        run = RunDir.open(path)
        eval_path = run.path / "eval.json"
        if not eval_path.is_file():
            raise RunDirError(
                f"{run.path}: not evaluated yet (no eval.json); run `fissionvae evaluate {run.path}` first"
            )
        from fissionvae.evaluation.trained_run import weights_digest

        status = json.loads(run.status_path.read_text()) if run.status_path.is_file() else {}
        result = json.loads(eval_path.read_text())
        state = run.load_state()
        stale = None if weights_digest(state.weights) == result.get("weights_sha256") else state.round
        return cls(run, run.load_config(), result, float(status.get("wall_seconds", 0.0)), stale)


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cells(entry: RunEntry) -> dict[str, str]:
    """The text of one run's cells (FID, per-group FID, IS, purity, NLL), with counts and paper values."""
    r, paper = entry.result, paper_numbers(entry.cfg)
    n = r["num_samples"]
    red = (" REDUCED" if r["reduced"] else "") + (" STALE: older than the checkpoint" if entry.stale else "")
    out = {"FID": "-", "per-group FID": "-"}
    if "fid" in r:
        out["FID"] = f"{r['fid']['overall']:.2f} (paper {_fmt(paper[0] if paper else None)}; n={n}{red})"
        out["per-group FID"] = "; ".join(
            f"{g} {v['fid']:.2f} (n={v['generated']})" for g, v in r["fid"]["per_group"].items()
        )
    c = r["classifier"]
    out["IS"] = (
        f"{c['is_domain']['mean']:.2f} (paper {_fmt(paper[1] if paper else None)}*; n={c['is_domain']['samples']})"
    )
    out["purity"] = "; ".join(f"{g} {v['purity']:.3f}" for g, v in c["per_group"].items()) + f" (n={n})"
    if "skipped" in r["nll"]:
        out["NLL"] = "- (no likelihood)"
        return out
    nll = r["nll"]["overall"]
    out["NLL"] = (
        f"{nll['neg_elbo']['nats_per_dim']:.3f} (paper {_fmt(paper[2] if paper else None)}; IW K={nll['iw']['k']} "
        f"{nll['iw']['nats_per_dim']:.3f}; {nll['images']} test images)"
    )
    return out


COLUMNS = ("FID", "per-group FID", "IS", "purity", "NLL")
FLOOR_LABEL = "mean-image floor (no learning)"


def table_rows(entries: list[RunEntry]) -> tuple[list[str], list[list[str]]]:
    """Rows = models; columns = (federated, centralised) x COLUMNS."""
    by_model: dict[str, dict[str, RunEntry]] = {}
    for e in entries:
        by_model.setdefault(model_label(e.cfg), {})[e.cfg.mode] = e
    headers = ["model"] + [f"{'fed' if m == 'federated' else 'central'} {c}" for m in MODES for c in COLUMNS]
    rows = []
    for label, modes in by_model.items():
        row = [label]
        for m in MODES:
            row += [cells(modes[m])[c] if m in modes else "" for c in COLUMNS]
        rows.append(row)
    return headers, rows


def floor_row(entries: list[RunEntry], data_dir: str | Path | None) -> list[str]:
    """The mean-image floor as a row of the table (its NLL per group and the FID of its one sample per group)."""
    from fissionvae.evaluation.floor_eval import floor_entry
    from fissionvae.evaluation.options import EvalOptions

    first = entries[0]
    options = first.result.get("options", {})
    eopts = EvalOptions(
        num_samples=first.result.get("num_samples"),
        test_size=first.result.get("test_size"),
        fid="fid" in first.result,
        inception=options.get("inception"),
        progress=False,
    )
    try:
        floor = floor_entry(first.cfg, None if data_dir is None else str(data_dir), eopts)
    except (OSError, ValueError, RuntimeError) as e:  # no data here: the report still stands without the floor
        return [FLOOR_LABEL, f"not computed ({str(e).splitlines()[0][:120]})"] + [""] * (2 * len(COLUMNS) - 1)
    fid = floor["fid"] or {}
    nll = "; ".join(f"{g} {v['nats_per_dim']:.3f}" for g, v in floor["nll"].items())
    text = {
        "FID": "-" if not fid else f"{fid['overall']:.2f} (its mean image, repeated; n={first.result['num_samples']})",
        "per-group FID": "; ".join(f"{g} {v:.2f}" for g, v in fid.get("per_group", {}).items()) or "-",
        "IS": "-",
        "purity": "-",
        "NLL": f"{floor['nll_overall_nats_per_dim']:.3f} (exact; {nll})",
    }
    return [FLOOR_LABEL] + [text[c] for c in COLUMNS] + [""] * len(COLUMNS)


def runs_table(entries: list[RunEntry]) -> tuple[list[str], list[list[str]]]:
    headers = ["run", "model", "mode", "rounds", "train wall time", "generated", "eval images", "eval time"]
    rows = [
        [
            e.run.path.name,
            model_label(e.cfg),
            e.cfg.mode,
            f"{e.result['round']}/{e.result['rounds_planned']}",
            f"{e.wall_seconds / 60:.1f} min",
            str(e.result["num_samples"]) + (" (reduced)" if e.result["reduced"] else ""),
            str(e.result["eval_images"]),
            f"{e.result['seconds'] / 60:.1f} min",
        ]
        for e in entries
    ]
    return headers, rows


def plot_loss_overlay(entries: list[RunEntry], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for e in entries:
        rounds = [m for m in e.run.metrics() if m.get("type") == "round" and "test/loss" in m]
        ax.plot(
            [m["round"] for m in rounds], [m["test/loss"] for m in rounds], label=f"{model_label(e.cfg)} [{e.cfg.mode}]"
        )
    ax.set_xlabel("round (centralised: epoch)")
    ax.set_ylabel("test loss, nats / image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    out = save_figure(fig, path)
    plt.close(fig)
    return out


def copy_grids(entries: list[RunEntry], out: Path) -> list[tuple[str, list[str]]]:
    """Copy each run's per-group 16x16 generation grids into ``out/images``; return (caption, files)."""
    rows = []
    for e in entries:
        files = []
        for g in e.cfg.group_names:
            src = e.run.path / "eval" / f"samples_{g}_16x16.png"
            if src.is_file():
                dst = out / "images" / f"{e.run.path.name}_{g}.png"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                files.append(f"images/{dst.name}")
        rows.append((f"{model_label(e.cfg)} [{e.cfg.mode}] ({e.run.path.name})", files))
    return rows


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]) + "\n"


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


NOTES = [
    "FID: TF-ported FID Inception-v3 features, overall = union of every group's samples vs union of the test sets; "
    "per-group = group's samples vs its test set. Compare only numbers with the same n.",
    "* IS here uses the tool's domain classifier (20 classes on Mixed MNIST), not the ImageNet Inception head the "
    "paper used: its scale differs from the paper's IS column.",
    "Purity: share of group g's samples that the domain classifier places in group g's classes.",
    "NLL: negative ELBO in nats per dimension (pixel), which matches the size of the paper's NLL column; IW = "
    "importance-weighted bound with K samples.",
    "Floor: the mean-image model (each pixel from the training set's per-pixel statistics), fitted on the first "
    "run's data; a model whose NLL is not below it learned nothing. Its FID scores its only sample, the mean image.",
    "STALE marks an evaluation computed from other weights than the run's checkpoint now holds "
    "(re-run fissionvae evaluate).",
]


HTML_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #bbb;padding:4px;vertical-align:top}"
)


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI, so that report.html is one self-contained file (mail it, attach it)."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_img(path: Path, alt: str, style: str = "") -> str:
    css = f" style='{style}'" if style else ""
    return f"<img alt='{html.escape(alt)}' src='{data_uri(path)}'{css}>"


def make_report(
    run_dirs: list[str | Path],
    out: str | Path,
    title: str = "fissionvae comparison",
    data_dir: str | Path | None = None,
) -> Path:
    """Write ``out/report.md`` (with its images beside it) and ``out/report.html`` (one self-contained file,
    images embedded) for the given evaluated runs."""
    import sys

    entries = [RunEntry.load(p) for p in run_dirs]  # validates every run before anything is written
    warnings = [e.warning() for e in entries if e.stale]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    headers, rows = table_rows(entries)
    rows.append(floor_row(entries, data_dir))
    rheaders, rrows = runs_table(entries)
    plot_loss_overlay(entries, out / "loss_curves.png")
    grids = copy_grids(entries, out)
    md = [
        f"# {title}\n",
        *[f"**WARNING: {w}.**\n" for w in warnings],
        "## Table 3 layout: ours (paper)\n",
        _md_table(headers, rows),
        *[f"- {n}" for n in NOTES],
        "\n## Runs\n",
        _md_table(rheaders, rrows),
        "\n## Test loss per round\n",
        "![loss curves](loss_curves.png)\n",
        "## Generations (16x16 per group)\n",
    ]
    for caption, files in grids:
        md.append(f"**{caption}**\n\n" + " ".join(f"![{f}]({f})" for f in files) + "\n")
    atomic_write_text(out / "report.md", "\n".join(md))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        *[f"<p><b>WARNING: {html.escape(w)}.</b></p>" for w in warnings],
        "<h2>Table 3 layout: ours (paper)</h2>",
        _html_table(headers, rows),
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in NOTES) + "</ul>",
        "<h2>Runs</h2>",
        _html_table(rheaders, rrows),
        "<h2>Test loss per round</h2>" + _html_img(out / "loss_curves.png", "loss curves"),
        "<h2>Generations</h2>",
    ]
    body += [
        f"<h3>{html.escape(c)}</h3>" + "".join(_html_img(out / f, Path(f).stem, "margin:4px") for f in files)
        for c, files in grids
    ]
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{HTML_STYLE}</style>"
    atomic_write_text(
        out / "report.html", f"<!doctype html><html><head>{head}</head><body>{''.join(body)}</body></html>\n"
    )
    return out / "report.md"
