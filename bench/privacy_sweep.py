"""Every run folder of docs/results/privacy.md: train, evaluate and audit each row, one at a time.

Rows (``ROWS``), each a ``fissionvae train --config configs/mixed_mnist/<model>.yaml --set ...`` run
folder ``<runs-dir>/<row>`` that ``fissionvae evaluate`` and ``fissionvae audit`` then read:

- ``rec-ld-*`` / ``rec-fedvae-*``: record-level DP-SGD (Opacus, ghost clipping) on FissionVAE+L+D and
  FedVAE, the paper's MLPs, 6,000 training images per group over 5 clients per group (1,200 each),
  Bernoulli(0.5) participation, 8 rounds of 2 local epochs, batch 32; target epsilon 1, 3, 8 at
  delta 1e-5, per-image clip 1, and ``inf`` (no privacy section: the plain engine).
- ``cl-ld-*``: client-level DP-FedAvg on FissionVAE+L+D with a small MLP (784-64-16 encoder,
  16-64-784 branches), every training image of both groups over 3,000 clients per group (20 images
  each: one person's images), participation 0.2, 20 rounds of 2 local epochs at lr 0.005; target
  epsilon 1, 3, 8 at delta 1e-5, whole-update clip 2 (about the 10% quantile of the non-private
  update norms, measured), and ``inf`` (the same federation without DP).

Each stage is skipped when its output exists (``status.json`` finished, ``eval.json``, ``audit.json``),
so an interrupted sweep resumes with the same command. Wall and CPU time (user + sys of the child
process) of every stage go to ``<row>/sweep_timing.json``. Then ``bench/privacy_numbers.py`` turns
the folders into the page's JSON and table.

Usage::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/privacy_sweep.py --data-dir ../shared/data \
        --runs-dir runs/privacy [--only rec-ld-inf,cl-ld-8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPSILONS = (None, 8, 3, 1)  # the non-private row first: it is the one every other is compared with


def _groups(**values: object) -> list[str]:
    return [f"data.groups.{i}.{k}={v}" for i in (0, 1) for k, v in values.items()]


RECORD_SCALE = [
    *_groups(train_size=6000, clients=5, test_size=1000),
    "train.rounds=8",
    "train.local_epochs=2",
    "eval.test_per_group=1000",
    "federation.workers=1",
]
CLIENT_SCALE = [
    *_groups(clients=3000, test_size=1000),
    "federation.participation=0.2",
    "model.encoder_hidden=[64]",
    "model.decoder.hidden=[64]",
    "train.rounds=20",
    "train.local_epochs=2",
    "train.lr=0.005",
    "eval.test_per_group=1000",
    "federation.workers=1",
]
RECORD_CLIP, CLIENT_CLIP, DELTA = 1.0, 2.0, "1.0e-5"


def _privacy(mode: str, eps: int | None, clip: float) -> list[str]:
    if eps is None:
        return []
    return [f"privacy.mode={mode}", f"privacy.target_epsilon={eps}", f"privacy.delta={DELTA}"] + [
        f"privacy.clip_norm={clip}"
    ]


def _rows() -> dict[str, tuple[str, list[str]]]:
    rows: dict[str, tuple[str, list[str]]] = {}
    for eps in EPSILONS:
        tag = "inf" if eps is None else str(eps)
        rows[f"rec-ld-{tag}"] = ("fission_ld", RECORD_SCALE + _privacy("record", eps, RECORD_CLIP))
    for eps in EPSILONS:
        tag = "inf" if eps is None else str(eps)
        rows[f"cl-ld-{tag}"] = ("fission_ld", CLIENT_SCALE + _privacy("client", eps, CLIENT_CLIP))
    for eps in EPSILONS:
        tag = "inf" if eps is None else str(eps)
        rows[f"rec-fedvae-{tag}"] = ("fedvae", RECORD_SCALE + _privacy("record", eps, RECORD_CLIP))
    return rows


ROWS = _rows()  # in the order they run: record +L+D, client +L+D, record FedVAE (the brief's priority)
EVALUATE = ["--num-samples", "1000", "--test-size", "1000", "--iw-samples", "10", "--no-tsne", "--fid-bf16"]
AUDIT = ["-n", "500", "--max-train", "1000", "--no-inception"]


def _timed(cmd: list[str]) -> dict:
    """Run ``cmd``; its wall time and the CPU time (user + sys) of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "command": " ".join(cmd)}


def _done(run: Path) -> bool:
    status = run / "status.json"
    return status.exists() and json.loads(status.read_text()).get("state") == "finished"


def sweep_row(name: str, model: str, sets: list[str], runs_dir: Path, data: list[str], cli: str) -> None:
    run = runs_dir / name
    timing_file = run / "sweep_timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    if not _done(run):
        if run.exists():  # an interrupted training: start it again (a row costs minutes)
            shutil.rmtree(run)
        cmd = [cli, "train", "--config", f"configs/mixed_mnist/{model}.yaml", *(a for s in sets for a in ("--set", s))]
        timing["train"] = _timed([*cmd, *data, "--runs-dir", str(runs_dir), "--name", name, "--no-progress"])
        timing_file.write_text(json.dumps(timing, indent=1))
    if not (run / "eval.json").exists():
        timing["evaluate"] = _timed([cli, "evaluate", str(run), *EVALUATE, *data, "--no-progress"])
        timing_file.write_text(json.dumps(timing, indent=1))
    if not (run / "audit.json").exists():
        timing["audit"] = _timed([cli, "audit", str(run), *AUDIT, *data, "--no-progress"])
        timing_file.write_text(json.dumps(timing, indent=1))
    print(f"{name}: {json.dumps(timing)}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/privacy"))
    ap.add_argument("--only", default=None, help="comma-separated row names (default: all, in order)")
    args = ap.parse_args()
    names = list(ROWS) if args.only is None else args.only.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; known: {list(ROWS)}")
    cli = str(Path(sys.executable).with_name("fissionvae"))
    data = [] if args.data_dir is None else ["--data-dir", os.path.abspath(args.data_dir)]
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        model, sets = ROWS[name]
        sweep_row(name, model, sets, args.runs_dir.resolve(), data, cli)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
