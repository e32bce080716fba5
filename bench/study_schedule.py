"""Wall time of a small study, scheduled on two cores (``--jobs 2``) against serial (``--jobs 1``), in one run.

The study: ``fissionvae study fission --tiny --tables 3 --no-fid`` (5 federated and 5 centralised
runs of the tiny preset, 10 evaluations). Each repetition trains and evaluates from scratch in a
fresh runs folder, serial and scheduled interleaved (S, P, P, S, ...) so that a change in the
machine's load hits both alike. Prints one JSON line per study and a summary with the ratio, the
load average before and after, and the CPU model; the numbers of both schedules are checked
equal (the scheduler must not change a result).

    PYTHONPATH=src python bench/study_schedule.py --data-dir ../shared/data --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from fissionvae.studies.fission import run_fission_study
from fissionvae.studies.fission_ledger import cpu_model
from fissionvae.studies.fission_options import Scale, StudyOptions


def one_study(jobs: int, root: Path, data_dir: Path, tables: tuple[str, ...]) -> tuple[float, dict]:
    """Wall seconds of one study from scratch, and its cells' numbers (without wall times)."""
    opts = StudyOptions(
        tables=tables,
        scale=Scale(tiny=True),
        runs_dir=root / "runs",
        out=root / "page",
        data_dir=data_dir,
        fid=False,
        progress=False,
        jobs=jobs,
    )
    start = time.perf_counter()
    run_fission_study(opts)
    seconds = time.perf_counter() - start
    ledger = json.loads((root / "page" / "mixed_mnist" / "study.json").read_text())
    cells = {k: {n: v for n, v in c["numbers"].items() if n != "eval_seconds"} for k, c in ledger["cells"].items()}
    return seconds, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="folder with mnist/ and fashion-mnist/")
    parser.add_argument("--repeats", type=int, default=1, help="pairs (serial, scheduled), order alternating")
    parser.add_argument("--tables", default="3", help="tables of the tiny study (default: 3)")
    args = parser.parse_args()
    tables = tuple(args.tables.split(","))
    load_before = os.getloadavg()
    times: dict[int, list[float]] = {1: [], 2: []}
    numbers: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for jobs in (1, 2) if rep % 2 == 0 else (2, 1):
                seconds, cells = one_study(jobs, Path(tmp) / f"r{rep}-j{jobs}", args.data_dir, tables)
                times[jobs].append(seconds)
                if numbers.setdefault(jobs, cells) != cells:
                    raise SystemExit("the same study gave different numbers on a rerun")
                print(json.dumps({"jobs": jobs, "repeat": rep, "wall_seconds": round(seconds, 1)}), flush=True)
    if numbers[1] != numbers[2]:
        raise SystemExit("scheduled and serial studies gave different numbers")
    serial, scheduled = statistics.median(times[1]), statistics.median(times[2])
    summary = {
        "study": f"--tiny --tables {args.tables} --no-fid",
        "serial_seconds": round(serial, 1),
        "scheduled_seconds": round(scheduled, 1),
        "speedup": round(serial / scheduled, 2),
        "repeats": args.repeats,
        "same_numbers": True,
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
