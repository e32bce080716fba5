"""The page of the FissionVAE study: ``<out>/mixed_mnist.md``, its HTML twin, rebuilt from the ledger.

Built from the ledger (:mod:`fissionvae.studies.fission_ledger`) and the study's
:class:`~fissionvae.studies.fission.Outcome` per cell:

* each table laid out like the paper's (:mod:`fissionvae.studies.fission_tables`), every cell
  "ours (paper)", the scale of every row, the mean-image floor, and for each table that is not
  complete at the paper's scale the exact command that completes it;
* the paper's claims with noise-aware verdicts and computed sizes (:mod:`fissionvae.studies.fission_claims`);
* a verdict section: the text of ``<out>/mixed_mnist/verdict.md`` when that file exists;
* how each federated round's participants move the test loss (:mod:`fissionvae.studies.fission_participation`);
* the runs (rounds, sample passes, wall times, samples/s with their range computed from the
  ledger), figures (:mod:`fissionvae.studies.fission_figures`) and how the numbers were made.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from fissionvae.io import atomic_write_text
from fissionvae.studies.fission_claims import Noise, check_claims
from fissionvae.studies.fission_figures import generation_figure, loss_figure, short
from fissionvae.studies.fission_ledger import Ledger, Outcome, samples_per_second
from fissionvae.studies.fission_notes import notes
from fissionvae.studies.fission_options import PAGE, Scale, StudyOptions
from fissionvae.studies.fission_participation import participation_blocks
from fissionvae.studies.fission_plan import EvalSpec, Plan, TableSpec
from fissionvae.studies.fission_tables import Cells, table_blocks
from fissionvae.studies.page_render import Block, machine, render_html, render_md


def tables_title(plan: Plan) -> str:
    """'Tables 3, 5, 6, 7 and Figure 10' for the plan's tables (the noise table is the study's own)."""
    tables = [t.key for t in plan.tables if t.key not in ("10", "noise")]
    parts = ([f"Table{'s' if len(tables) > 1 else ''} " + ", ".join(tables)] if tables else []) + (
        ["Figure 10"] if any(t.key == "10" for t in plan.tables) else []
    )
    return " and ".join(parts) or "noise runs"


def completion(t: TableSpec, outcomes: dict[EvalSpec, Outcome], opts: StudyOptions) -> Block | None:
    """The command that completes a table at the paper's scale (and at this page's, while cells are pending)."""
    cells = [outcomes[ev] for r in t.rows for ev in r.evals.values()]
    if all(o.done and o.scale == Scale() for o in cells):
        return None
    paper = dataclasses.replace(
        opts,
        tables=(t.key,),
        show=(),
        scale=Scale(),
        num_samples=None,
        iw_samples=None,
        test_size=None,
        fallback_scale=None,
        fid=True,
        fid_bootstrap=50,
        baselines=(),
    )
    text = f"Not at the paper's scale yet: `{paper.command()}` completes this table with the paper's protocol."
    if not all(o.done for o in cells):
        text += f" At this page's scale: `{dataclasses.replace(opts, tables=(t.key,), show=()).command()}`."
    return ("p", text)


def runs_rows(plan: Plan, outcomes: dict[EvalSpec, Outcome], ledger: Ledger) -> tuple[list[list[str]], dict]:
    """One row per run (from the ledger, or its folder while it trains) and the totals, rates included."""
    rows: list[list[str]] = []
    totals: dict[str, Any] = {"train_seconds": 0.0, "eval_seconds": 0.0, "passes": 0, "planned_passes": 0.0}
    for spec in plan.runs:
        evs = [o for o in outcomes.values() if o.spec.run == spec and o.scale == outcomes[o.spec].scale]
        cfg = evs[0].cfg
        rec = ledger.runs.get(cfg.name)
        eval_s = sum((o.entry or {}).get("numbers", {}).get("eval_seconds") or 0.0 for o in evs)
        totals["eval_seconds"] += eval_s
        tables = ",".join(plan.tables_of(spec))
        done = ", ".join(o.spec.result_name for o in evs if o.done) or "-"
        if rec is None:
            st = evs[0].status
            state = "not started" if st is None else f"{st.get('state')} {st.get('rounds_done', 0)}/?"
            rows.append([f"`{cfg.name}`", tables, state, "-", "-", "-", f"{eval_s / 60:.1f}", done, _cpus(None, evs)])
            continue
        wall, passes = rec["wall_seconds"], rec.get("passes")
        totals["train_seconds"] += wall
        totals["passes"] += passes or 0
        totals["planned_passes"] += rec.get("planned_passes") or 0.0
        rate = samples_per_second(rec)
        folder = Path(rec.get("run_folder") or cfg.name).name
        rows.append(
            [
                f"`{folder}`",
                tables,
                f"{rec['state']} {rec['rounds_done']}/{rec['rounds_planned']}",
                "-" if passes is None else f"{passes:,} / {rec.get('planned_passes', 0):,.0f}",
                f"{wall / 60:.1f}",
                "-" if rate is None else f"{rate:,.0f}",
                f"{eval_s / 60:.1f}",
                done,
                _cpus(rec, evs),
            ]
        )
    totals["rates"] = {
        cpu: {m: [min(v), max(v)] for m, v in ledger.training_rates(cpu).items()} for cpu in ledger.cpus()
    }
    return rows, totals


def _cpus(rec: dict | None, evs: list[Outcome]) -> str:
    """The CPU that trained a run and the one(s) that evaluated it: 'AMD EPYC', or 'AMD EPYC; eval Intel ...'."""
    train = (rec or {}).get("cpu")
    evals = sorted({o.entry["cpu"] for o in evs if o.entry and o.entry.get("cpu")} - {train})
    return "; ".join([train or "-"] + [f"eval {c}" for c in evals]) if train or evals else "-"


def rates_sentence(totals: dict) -> str:
    """'On AMD EPYC: federated runs 5,400-9,300 samples/s, ...': every finished run of the ledger, per CPU."""
    per_cpu = [
        f"on {cpu}: "
        + ", ".join(
            f"{'federated' if m == 'federated' else 'centralised'} runs {lo:,.0f}-{hi:,.0f} samples/s"
            for m, (lo, hi) in sorted(modes.items(), reverse=True)
        )
        for cpu, modes in totals.get("rates", {}).items()
        if modes
    ]
    return ("Training rates (every finished run of the ledger) " + "; ".join(per_cpu) + ".") if per_cpu else ""


def write_page(
    plan: Plan, outcomes: dict[EvalSpec, Outcome], ledger: Ledger, opts: StudyOptions, seconds: float
) -> Path:
    """Draw the figures from the ledger and write ``<out>/mixed_mnist.md``, ``.html`` and the ledger; return the .md."""
    out, assets, scale = opts.out_dir, ledger.folder, opts.scale
    cells = Cells(outcomes, opts, ledger)
    done = sum(o.done and o.scale == scale for o in outcomes.values())
    stand_ins = sum(o.done and o.scale != scale for o in outcomes.values())
    label = "the paper's scale" if not scale.reduced else f"REDUCED preset `{scale.label}`"
    title = f"FissionVAE on Mixed MNIST: {tables_title(plan)}" + (
        "" if not scale.reduced else f" [REDUCED: {scale.label}]"
    )
    blocks: list[Block] = [("h", 1, title)]
    if scale.reduced:
        blocks.append(
            (
                "p",
                f"**This page is a reduced-scale study (`{scale.label}`), not the paper's setting: fewer rounds/"
                "epochs and fewer generated images (see [Scale](#scale)). "
                "Its numbers are not comparable with the paper's.**",
            )
        )
    if opts.test_size is not None:
        blocks.append(
            (
                "p",
                f"**Evaluated against a seeded subset of {opts.test_size:,} test images per group (`--test-size`), "
                "not the full test sets: a reduced protocol.**",
            )
        )
    fallback = opts.fallback_scale
    blocks += [
        (
            "p",
            f"Written by `{opts.command()}` at {label}: {done} of {len(outcomes)} evaluation cells done at this scale"
            + (f" ({stand_ins} more shown at `{fallback.label}`)" if stand_ins and fallback else "")
            + f", {len(plan.runs)} runs, from the ledger `{PAGE}/study.json`. Written on: {machine()}; the Runs "
            "table says which CPU trained and evaluated each run (wall times and rates depend on it).",
        ),
        (
            "p",
            "Every cell reads **ours (paper)**; the `scale` column says at which scale each row was measured. "
            "`pending` cells are completed by running the same command again (it reuses what the ledger holds, "
            "resumes interrupted runs from their last round and skips finished evaluations)."
            + (
                ""
                if fallback is None
                else f" Rows at scale `{fallback.label}` are not done at this scale yet and show "
                f"the finished `{fallback.label}` preset's number instead; they are not the paper's scale."
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
            f"_Verdict not written yet: whoever runs the study reads the numbers below and writes it to "
            f"`{verdict}`; rerunning the command includes it here._",
        )
    )
    noise = Noise(
        plan,
        lambda ev: outcomes[ev].entry if ev in outcomes else None,
        lambda ev: outcomes[ev].scale.label if ev in outcomes else "",
    )
    claim_rows = check_claims(plan, lambda c: _cell(plan, c), noise)
    blocks += [
        (
            "p",
            "The paper's comparative claims, checked against our numbers. A claim is `same` or `differs` only "
            "where every gap exceeds its noise (the bootstrap interval of each FID over its generated images and the "
            "FID spread across two training seeds, see [the noise](#noise-fid-across-two-training-seeds-federated-"
            "mixed-mnist)); otherwise it is `inconclusive`. Sizes are the relative gaps 1 - a/b of each comparison:",
        ),
        (
            "table",
            ["claim", "paper", "ours", "size", "noise (±, worst pair)", "verdict"],
            [[r[k] for k in ("claim", "paper", "ours", "size", "noise", "verdict")] for r in claim_rows],
        ),
    ]
    figures: dict[str, str] = {}
    for t in plan.tables:
        section = table_blocks(t, cells, ledger.floor)
        if scale.reduced:  # every table heading says it, not only the page's title
            section[0] = ("h", 2, f"{t.title} [REDUCED: {scale.label}]")
        extra = completion(t, outcomes, opts)
        blocks += section + ([extra] if extra else [])
        blocks += figure_blocks(t, outcomes, ledger, assets, figures)
    blocks += participation_blocks(outcomes, ledger, assets, figures)
    rows, totals = runs_rows(plan, outcomes, ledger)
    run_headers = ["run folder", "tables", "state (rounds)", "sample passes done / expected", "train wall, min"]
    blocks += [
        ("h", 2, "Runs"),
        ("table", [*run_headers, "samples/s", "eval wall, min", "evaluations", "CPU"], rows),
        (
            "p",
            f"Totals: {totals['passes']:,} of {totals['planned_passes']:,.0f} expected sample passes; training "
            f"{totals['train_seconds'] / 3600:.2f} h (sum of round times), "
            f"evaluation {totals['eval_seconds'] / 3600:.2f} h; "
            f"this call {seconds / 60:.1f} min. {rates_sentence(totals)}",
        ),
    ]
    blocks += notes(opts, noise)
    atomic_write_text(out / f"{PAGE}.md", render_md(blocks))
    atomic_write_text(out / f"{PAGE}.html", render_html(blocks, title))
    meta = {
        "command": opts.command(),
        "scale": scale.label,
        "written": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine(),
        "figures": figures,
        "totals": totals,
        "claims": claim_rows,
    }
    ledger.save(meta)
    return out / f"{PAGE}.md"


def _cell(plan: Plan, cell: tuple[str, str, str]) -> EvalSpec | None:
    for t in plan.tables:
        if t.key == cell[0]:
            for r in t.rows:
                if r.label == cell[1]:
                    return r.evals.get(cell[2])
    return None


def figure_blocks(t: TableSpec, outcomes: dict, ledger: Ledger, assets: Path, figures: dict) -> list[Block]:
    """The table's generation mosaic and loss curves, drawn from the ledger (a figure of an earlier page is kept)."""
    out: list[Block] = []
    gen_path = assets / f"generations_table{t.key}.png"
    fig = generation_figure(t, outcomes, ledger, gen_path) or (gen_path if gen_path.is_file() else None)
    if fig is not None:
        figures[f"generations_table{t.key}"] = fig.name
        caption = "Generations (25 per model and group, the run seed's sample stream" + (
            ", the same noise with and without the swap" if t.key == "10" else ""
        )
        out += [("p", caption + "):"), ("img", f"{PAGE}/{fig.name}", f"generations, {t.title}")]
    if t.key in ("7", "10"):
        return out
    loss_path = assets / f"loss_table{t.key}.png"
    loss = loss_figure(t, outcomes, ledger, loss_path) or (loss_path if loss_path.is_file() else None)
    if loss is not None:
        figures[f"loss_table{t.key}"] = loss.name
        cols = ", ".join(short(c) for c in t.columns)
        out += [
            (
                "p",
                f"Test negative ELBO per round and group (nats/image on the fixed test subset of "
                f"`eval.test_per_group` images per group; columns {cols}; solid: federated, dashed: centralised):",
            ),
            ("img", f"{PAGE}/{loss.name}", f"loss curves, {t.title}"),
        ]
    return out
