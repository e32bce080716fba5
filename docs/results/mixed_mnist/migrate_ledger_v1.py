"""One-off: turn the s=0.05 page's study.json (format 1, written before the ledger existed) into a format-2 ledger.

The run folders of that page are gone, so everything comes from the committed files: the numbers
per cell from study.json, each run's sample passes and wall time from the page's runs table, the
FedGAN baseline's numbers from its Table 3 row. Each cell's identity is checked, not assumed: the
config digest our code computes for the cell at s=0.05 must start with the 8 hex digits in the
run folder's name, and the sample counts must be those of the page's command. Run it once from
the repository root: ``python docs/results/mixed_mnist/migrate_ledger_v1.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fissionvae.evaluation.report import PAPER_TABLE3
from fissionvae.studies.common import config_digest
from fissionvae.studies.fission import cell_key
from fissionvae.studies.fission_ledger import LEDGER_FORMAT, eval_identity
from fissionvae.studies.fission_options import Scale, StudyOptions, eval_options, resolve_config
from fissionvae.studies.fission_plan import make_plan

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "mixed_mnist.md"
# a row of the earlier page's runs table: folder-digest8 | tables | state done/planned | passes / expected | wall |
RUN_ROW = re.compile(r"\| `(.+?)-([0-9a-f]{8})` \| [\d,]+ \| (\w+) (\d+)/(\d+) \| ([\d,]+) / ([\d,]+) \| ([\d.]+) \|")


def main() -> None:
    old = json.loads((HERE / "study.json").read_text())
    if old.get("format") == LEDGER_FORMAT:
        raise SystemExit("study.json is already a format-2 ledger")
    scale = Scale(0.05)
    opts = StudyOptions(tables=("3", "5", "6", "7", "10"), scale=scale, test_size=2000, runs_dir=Path("runs/study"))
    plan = make_plan(opts.tables)
    cpu = re.search(r"\((.*?)\)", old["machine"]).group(1)
    cells = {}
    for ev in plan.evals:
        was = old["cells"][ev.key]
        cfg = resolve_config(ev.run, scale)
        digest = config_digest(cfg)
        if not was["run"].endswith(digest[:8]):
            raise SystemExit(f"{ev.key}: run folder {was['run']} is not config {digest[:8]}")
        eopts = eval_options(ev, opts)
        n = was["numbers"]
        if (n["generated"], n["iw_k"], n["fid_real"]) != (eopts.num_samples, eopts.iw_samples, 2 * opts.test_size):
            raise SystemExit(f"{ev.key}: sample counts {n['generated']}, K={n['iw_k']} are not the page's")
        cells[cell_key(ev, scale)] = {
            "config": cfg.name,
            "config_sha256": digest,
            "eval": eval_identity(eopts),
            "numbers": n,
            "fid_interval": None,  # not measured before the ledger
            "same_noise_as_unswapped": False,  # the swap was drawn with other noise then
            "cpu": cpu,
            "written": old["written"],
            "run_folder": was["run"],
            "grids": {},
        }
    runs = {}
    for line in PAGE.read_text().splitlines():
        m = RUN_ROW.match(line)
        if not m:
            continue
        name, digest8, state, done, planned, passes, expected, _ = m.groups()
        status = next(c["status"] for c in old["cells"].values() if c["config"] == name)
        spec = next(s for s in plan.runs if resolve_config(s, scale).name == name)
        digest = config_digest(resolve_config(spec, scale))
        assert digest.startswith(digest8), name
        runs[name] = {
            "config_sha256": digest,
            "mode": spec.mode,
            "state": state,
            "rounds_done": int(done),
            "rounds_planned": int(planned),
            "wall_seconds": float(status["wall_seconds"]),
            "passes": int(passes.replace(",", "")),
            "planned_passes": float(expected.replace(",", "")),
            "cpu": cpu,
            "run_folder": f"runs/study/{name}-{digest8}",
            "loss": {},  # the loss curves survive as the page's PNGs only
        }
    fedgan = next(line for line in PAGE.read_text().splitlines() if line.startswith("| FedGAN (DCGAN) (baseline)"))
    values = [c.strip().split(" ")[0] for c in fedgan.strip("|").split("|")[1:]]

    def num(text: str) -> float | None:
        return None if text == "-" else float(text)

    modes = {
        m: {"fid": num(values[3 * i]), "is": num(values[3 * i + 1]), "nll": num(values[3 * i + 2]), "generated": 1000}
        for i, m in enumerate(("federated", "centralized"))
    }
    modes["federated"]["folder"], modes["centralized"]["folder"] = "runs/fedgan/fed", "runs/fedgan/central"
    paper = {m: list(v) for m, v in PAPER_TABLE3["FedGAN (DCGAN)"].items()}
    ledger = {
        "format": LEDGER_FORMAT,
        "cells": cells,
        "runs": runs,
        "baselines": {"FedGAN (DCGAN)": {"paper": paper, "modes": modes}},
    }
    assert len(runs) == len(plan.runs), sorted(runs)
    (HERE / "study.json").write_text(json.dumps(ledger, indent=1, sort_keys=True) + "\n")
    print(f"ledger: {len(cells)} cells, {len(runs)} runs, 1 baseline")


if __name__ == "__main__":
    main()
