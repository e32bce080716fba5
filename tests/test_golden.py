"""Golden numbers: one training round of a tiny federation, pinned so that any numeric change shows at once.

The federation is ``tests.helpers.tiny_config`` (two groups of two Mixed MNIST clients, 400/200
images per group, FissionVAE+L+D with the Bernoulli likelihood, seed 3, Bernoulli(0.5)
participation). The values were recorded on this project's CPU build of torch 2.13; the
tolerance (1e-6 relative) absorbs float32 summation order across CPUs, while any change to the
data, seeding, model, loss, optimiser or aggregation moves them by far more. If a change is
intended, rerun and update the numbers in the same commit, saying why.
"""

from __future__ import annotations

import pytest
from tests.helpers import tiny_config

from fissionvae.federation.engine import train
from fissionvae.runs import RunDir

ROUND1 = {"clients": [1, 3], "test/loss": 525.6971325683594, "train/loss": 540.4592187500001}


def test_loss_after_round_one_is_pinned(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, train={"rounds": 1})
    run = RunDir.create(tmp_path, cfg, "golden")
    train(cfg, run, progress=False)
    (round1,) = [m for m in run.metrics() if m["type"] == "round"]
    assert round1["clients"] == ROUND1["clients"]
    assert round1["test/loss"] == pytest.approx(ROUND1["test/loss"], rel=1e-6)
    assert round1["train/loss"] == pytest.approx(ROUND1["train/loss"], rel=1e-6)
