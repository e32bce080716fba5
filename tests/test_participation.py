"""Each round's participants per group, recomputed from the config, and how the test loss follows them."""

import numpy as np
from tests.helpers import tiny_config

from fissionvae.federation.engine import train
from fissionvae.runs import RunDir
from fissionvae.studies.fission_ledger import Ledger, Outcome
from fissionvae.studies.fission_options import CONFIGS_DIR, Scale, resolve_config
from fissionvae.studies.fission_participation import (
    MIN_ROUNDS,
    group_counts,
    participation_blocks,
    share_loss_correlation,
)
from fissionvae.studies.fission_plan import EvalSpec, RunSpec


def test_group_counts_are_the_clients_a_real_run_trained(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, train={"rounds": 6}, federation={"participation": 0.5})
    run = RunDir.create(tmp_path, cfg, "run")
    train(cfg, run, progress=False)
    trained = {g: [0] * 6 for g in cfg.group_names}
    for m in run.metrics():
        if m["type"] == "client":
            for g in m["groups"]:
                trained[g][m["round"] - 1] += 1
    assert group_counts(cfg) == trained
    assert len({tuple(c) for c in trained.values()}) > 1  # the groups' cohorts differ: a real check


def test_group_counts_of_the_paper_config_seed_0_and_1():
    """The Mixed MNIST campaign's cohorts: 20 clients, p = 0.5, 70 rounds; round 70 leans to FashionMNIST
    with seed 0 (4 / 7) and to MNIST with seed 1 (6 / 2)."""
    for seed, last in ((None, [4, 7]), (1, [6, 2])):
        cfg = resolve_config(RunSpec("fedvae", seed=seed), Scale(), CONFIGS_DIR)
        counts = group_counts(cfg)
        assert [len(c) for c in counts.values()] == [70, 70]
        assert [counts[g][-1] for g in cfg.group_names] == last
        assert all(0 <= n <= 10 for c in counts.values() for n in c)


def test_share_loss_correlation():
    rng = np.random.default_rng(0)
    mnist = rng.integers(0, 6, size=30).tolist()
    fashion = rng.integers(1, 6, size=30).tolist()
    total = np.add(mnist, fashion)
    share = {"mnist": np.divide(mnist, total), "fashion": np.divide(fashion, total)}
    loss = {g: [[r + 1, 100.0 - 40.0 * s[r] + rng.normal(0, 1)] for r in range(30)] for g, s in share.items()}
    r = share_loss_correlation({"mnist": mnist, "fashion": fashion}, loss)
    assert r["mnist"] < -0.9 and r["fashion"] < -0.9
    flat = {g: [[i, 5.0] for i, _ in v] for g, v in loss.items()}
    assert share_loss_correlation({"mnist": mnist, "fashion": fashion}, flat) == {"mnist": None, "fashion": None}
    short = {g: v[: MIN_ROUNDS - 1] for g, v in loss.items()}
    assert share_loss_correlation({"mnist": mnist, "fashion": fashion}, short) == {"mnist": None, "fashion": None}


def test_the_page_section_reads_the_ledger(tmp_path):
    cfg = resolve_config(RunSpec("fedvae"), Scale(), CONFIGS_DIR)
    counts = group_counts(cfg)
    total = np.add(counts["mnist"], counts["fashion"])
    ledger = Ledger(tmp_path / "study.json")
    ledger.runs[cfg.name] = {
        "loss": {
            g: [[r + 1, 200.0 - 100.0 * c[r] / max(total[r], 1) + 0.5 * ((r * 7) % 3)] for r in range(70)]
            for g, c in counts.items()
        }
    }
    spec = EvalSpec(RunSpec("fedvae"))
    outcome = Outcome(spec, cfg, entry={"numbers": {"purity": {"mnist": 0.07, "fashion": 0.93}}})
    figures: dict = {}
    blocks = participation_blocks({spec: outcome}, ledger, tmp_path, figures)
    (table,) = [b for b in blocks if b[0] == "table"]
    (row,) = table[2]
    assert row[:3] == ["fedvae", "0", "4 / 7"] and row[5] == "0.07 / 0.93"
    assert all(float(x) < -0.9 for x in row[3].split(" / "))
    assert figures == {"participation": "participation.png"}
    assert (tmp_path / "participation.png").stat().st_size > 10_000
    # a reduced run (4 rounds) has no section
    short = {g: v[:4] for g, v in ledger.runs[cfg.name]["loss"].items()}
    ledger.runs[cfg.name]["loss"] = short
    assert participation_blocks({spec: outcome}, ledger, tmp_path, {}) == []
