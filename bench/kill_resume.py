"""Kill a training run with SIGKILL at seeded random moments, resume it, and check the weights.

Trains one small Mixed MNIST federation uninterrupted (the reference), then for each of
``--kills`` seeded kill points starts the same run and SIGKILLs its whole process group (server
and worker processes) at that point: once ``metrics.jsonl`` holds a seeded number of lines (0 =
before any round finished, up to all but the last), plus a seeded jitter of up to 0.5 s, so kills
land in data loading, mid-round, between a round's metrics and its checkpoint, and in the final
artefacts. It resumes the run with ``fissionvae train --resume`` until it finishes and compares
the final checkpoint with the reference bit for bit. Prints one JSON object: each kill point, the
rounds checkpointed when it struck, temp files left and swept, and whether the resumed weights
are identical.

    PYTHONPATH=src python bench/kill_resume.py --data-dir ../shared/data --kills 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fissionvae.federation.state import load_state

SMALL = [
    "data.groups.0.train_size=1000",
    "data.groups.1.train_size=1000",
    "data.groups.0.test_size=200",
    "data.groups.1.test_size=200",
    "train.rounds=6",
    "train.local_epochs=1",
    "eval.test_per_group=100",
    "federation.workers=2",
]


def fissionvae(*args: str) -> list[str]:
    return [sys.executable, "-m", "fissionvae.cli", *args]


def train_command(runs: Path, name: str, data_dir: str) -> list[str]:
    sets = [x for s in SMALL for x in ("--set", s)]
    return fissionvae(
        "train", "--config", "configs/mixed_mnist/quick.yaml", "--data-dir", data_dir,
        "--runs-dir", str(runs), "--name", name, "--no-progress", *sets,
    )  # fmt: skip


def state_of(run: Path) -> str:
    """The run's status.json state ("stopped" before the first status was written)."""
    path = run / "status.json"
    return json.loads(path.read_text()).get("state", "stopped") if path.is_file() else "stopped"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_state(run / "checkpoints" / "latest.pt").weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        start = time.perf_counter()
        subprocess.run(train_command(runs, "reference", args.data_dir), check=True, env=env, capture_output=True)
        reference_seconds = time.perf_counter() - start
        reference = weights(runs / "reference")
        lines = len((runs / "reference" / "metrics.jsonl").read_text().splitlines())
        rng = np.random.default_rng(args.seed)
        points = sorted(
            zip(rng.integers(0, lines, args.kills).tolist(), rng.uniform(0, 0.5, args.kills).tolist(), strict=True)
        )
        rows = []
        for k, (after_lines, delay) in enumerate(points):
            name = f"kill-{k}"
            proc = subprocess.Popen(
                train_command(runs, name, args.data_dir),
                env=env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            metrics = runs / name / "metrics.jsonl"
            while (
                proc.poll() is None
                and after_lines > 0
                and (not metrics.is_file() or len(metrics.read_text().splitlines()) < after_lines)
            ):
                time.sleep(0.02)
            time.sleep(delay)
            finished_before_kill = proc.poll() is not None
            if not finished_before_kill:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            run = runs / name
            status = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
            temps = sorted(p.name for p in run.rglob("*.tmp")) if run.is_dir() else []
            resumes, error = 0, None
            if not (run / "config.yaml").is_file():  # killed before the run folder was complete: start again
                subprocess.run(["rm", "-rf", str(run)], check=True)
                subprocess.run(train_command(runs, name, args.data_dir), check=True, env=env, capture_output=True)
            while error is None and state_of(run) != "finished":
                resumes += 1
                done = subprocess.run(fissionvae("train", "--resume", str(run), "--no-progress"), env=env, text=True,
                                      capture_output=True)  # fmt: skip
                if done.returncode != 0:
                    error = done.stderr.strip()
            got = weights(run) if error is None else {}
            identical = got.keys() == reference.keys() and all(torch.equal(got[k], reference[k]) for k in reference)
            rows.append(
                {
                    "after_metric_lines": after_lines,
                    "jitter_s": round(delay, 3),
                    "killed": not finished_before_kill,
                    "state_at_kill": status.get("state"),
                    "rounds_checkpointed_at_kill": status.get("rounds_done"),
                    "temp_files_left_by_kill": temps,
                    "temp_files_after_resume": sorted(p.name for p in run.rglob("*.tmp")),
                    "resumes": resumes,
                    "resume_error": error,
                    "bit_identical": identical,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"reference_seconds": reference_seconds, "kills": rows}, indent=1))


if __name__ == "__main__":
    main()
