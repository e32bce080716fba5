"""A tiny record-level privacy-utility sweep on Mixed MNIST (docs/results/privacy.md).

FissionVAE+L+D and FedVAE (``configs/mixed_mnist/{fission_ld,fedvae}.yaml``) at a reduced scale
(2,000 training images per group over 5 clients each, Bernoulli(0.5) participation, 8 rounds of 1
local epoch, batch 32), record-level DP-SGD with target epsilon 1, 3, 8 (delta 1e-5, clip 1) and the
non-private run (inf); one line per run: the worst client's epsilon, the noise multiplier, the
training wall time and the last round's test -ELBO per group (1,000 test images per group). The
untrained models' test -ELBO is printed first for reference. In-process engine (``workers=1``).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/privacy_sweep.py --data-dir ../shared/data --json sweep.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fissionvae.config import load_config
from fissionvae.federation.engine import Federation, test_metrics, train
from fissionvae.runs import RunDir

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mixed_mnist"
SCALE = [
    *(
        f"data.groups.{i}.{k}={v}"
        for i in (0, 1)
        for k, v in (("train_size", 2000), ("clients", 5), ("test_size", 1000))
    ),
    "train.rounds=8",
    "train.local_epochs=1",
    "eval.test_per_group=1000",
    "federation.workers=1",
]


def elbos(metrics: dict) -> dict:
    return {k: round(v, 1) for k, v in metrics.items() if k.startswith("test/") and k.endswith("neg_elbo")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    for model in ("fission_ld", "fedvae"):
        untrained = Federation.from_config(load_config(CONFIGS / f"{model}.yaml", SCALE), args.data_dir)
        rows.append({"model": model, "untrained": True, **elbos(test_metrics(untrained, 7))})
        print(json.dumps(rows[-1]), flush=True)
        for eps in (1, 3, 8, None):
            privacy = [] if eps is None else [
                "privacy.mode=record", f"privacy.target_epsilon={eps}", "privacy.delta=1.0e-5", "privacy.clip_norm=1.0"
            ]  # fmt: skip
            cfg = load_config(CONFIGS / f"{model}.yaml", SCALE + privacy)
            with tempfile.TemporaryDirectory() as tmp:
                run = RunDir.create(tmp, cfg, f"{model}-{eps}")
                start = time.perf_counter()
                train(cfg, run, data_dir=args.data_dir, progress=False)
                wall = time.perf_counter() - start
                last = run.metrics()[-1]
            rows.append({
                "model": model, "epsilon_target": eps, "epsilon_max": last.get("privacy/epsilon_max"),
                "noise_multiplier": last.get("privacy/noise_multiplier"), "wall_s": round(wall, 1), **elbos(last),
            })  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        from fissionvae.io import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
