"""``fissionvae audit``: the statistics on constructed cases, and the audit of overfitted and fresh models."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from tests.helpers import tiny_config

from fissionvae.api import train_from_config
from fissionvae.audit.membership import cross_group_leakage, loss_threshold_attack
from fissionvae.audit.memorisation import memorisation_report
from fissionvae.audit.run import AuditOptions, audit_run
from fissionvae.audit.stats import data_copying_statistic, mann_whitney_z, roc_auc, tpr_at_fpr
from fissionvae.cli import main
from fissionvae.config import ModelConfig
from fissionvae.data.federated import build_clients, load_groups
from fissionvae.evaluation.evaluate import generate, to_uint8
from fissionvae.models.vae import FissionVAE, build_model

# --------------------------------------------------------------------------- statistics by hand


def test_auc_by_hand_and_against_sklearn():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert roc_auc(np.array([1.0, 3.0]), np.array([2.0])) == 0.5  # one pair won, one lost
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5  # a tie counts one half
    assert roc_auc(np.array([2.0, 2.0, 5.0]), np.array([2.0, 1.0])) == pytest.approx((1.5 + 1.5 + 2) / 6)
    rng = np.random.default_rng(0)
    m, n = rng.normal(0.3, 1, 50).round(1), rng.normal(0, 1, 70).round(1)  # rounding makes ties
    expected = roc_auc_score(np.r_[np.ones(50), np.zeros(70)], np.r_[m, n])
    assert roc_auc(m, n) == pytest.approx(expected, abs=1e-12)


def test_tpr_at_fpr_by_hand():
    nonmembers = np.arange(100.0)  # 0 .. 99
    members = np.array([99.5, 98.5, 50.0])
    at1 = tpr_at_fpr(members, nonmembers, 0.01)  # one non-member may pass: threshold 98
    assert at1["tpr"] == pytest.approx(2 / 3) and at1["achieved_fpr"] == 0.01 and at1["resolvable"]
    at01 = tpr_at_fpr(members, nonmembers, 0.001)  # none may pass: threshold 99, and 100 < 1/0.001
    assert at01["tpr"] == pytest.approx(1 / 3) and at01["achieved_fpr"] == 0.0 and not at01["resolvable"]
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr(members, nonmembers, 0.0)


def test_mann_whitney_z_by_hand():
    # every generated value below every test value: U = 0, z = -(9/2) / sqrt(9 * 7 / 12)
    assert mann_whitney_z(np.zeros(3), np.ones(3)) == pytest.approx(-4.5 / math.sqrt(63 / 12))
    assert mann_whitney_z(np.ones(3), np.zeros(3)) == pytest.approx(4.5 / math.sqrt(63 / 12))
    assert mann_whitney_z(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == 0.0


def test_data_copying_statistic_sign_on_constructed_cases():
    rng = np.random.default_rng(1)
    train, test, fresh = (rng.normal(size=(n, 5)) for n in (400, 400, 400))
    copies = train[rng.integers(0, 400, 400)] + rng.normal(scale=0.01, size=(400, 5))
    broad = rng.normal(scale=2.0, size=(400, 5))  # underfitting: spread wider than the data
    assert data_copying_statistic(train, test, copies, cells=5, seed=0)["c_t"] < -5
    assert abs(data_copying_statistic(train, test, fresh, cells=5, seed=0)["c_t"]) < 3
    assert data_copying_statistic(train, test, broad, cells=5, seed=0)["c_t"] > 5
    sparse = data_copying_statistic(train, test, copies[:3], cells=5, seed=0, min_generated=20)
    assert sparse["c_t"] is None and sparse["cells_used"] == 0  # no cell holds enough samples


# --------------------------------------------------------------------------- overfitted run, end to end


def overfit_config(data_dir, **sections):
    """One client per group holding 10 images, trained 450 epochs: it memorises them."""
    groups = [
        {"name": "mnist", "dataset": "mnist", "clients": 1, "train_size": 10, "test_size": 200},
        {"name": "fashion", "dataset": "fashion-mnist", "clients": 1, "train_size": 10, "test_size": 200},
    ]
    train = {"rounds": 3, "local_epochs": 150, "batch_size": 10}
    return tiny_config(data_dir, data={"groups": groups}, federation={"participation": 1.0}, train=train, **sections)


AUDIT_ARGS = ["--no-inception", "--num-samples", "200", "--max-train", "200", "--cells", "3", "--no-progress"]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, shared_data_dir):
    return train_from_config(overfit_config(shared_data_dir), runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_audit_flags_a_model_overfitted_to_10_images(overfit_run, shared_data_dir, capsys):
    assert main(["audit", str(overfit_run.path), *AUDIT_ARGS, "--data-dir", str(shared_data_dir)]) == 0
    assert "membership AUC" in capsys.readouterr().out
    result = json.loads((overfit_run.path / "audit.json").read_text())
    for group in ("mnist", "fashion"):
        pixel = result["memorisation"][group]["pixel"]
        assert pixel["reference_images"] == 10  # as many test images as there are training images
        assert pixel["nn_distance_train"]["median"] < pixel["nn_distance_test"]["median"]
        assert pixel["nn_ratio_median"] < 0.9 and pixel["share_closer_to_train"] > 0.8
        assert pixel["data_copying"]["c_t"] < -3  # significantly negative: data copying
        mia = result["membership"]["per_group"][group]
        assert mia["members"] == 10 and mia["nonmembers"] == 200
        assert mia["auc"] > 0.8 and mia["tpr_at_1pct_fpr"]["tpr"] > 0.3
        assert (overfit_run.path / "audit" / f"closest_to_training_{group}.png").is_file()
    assert set(result["membership"]["per_client"]) == {"0", "1"}  # one client per group
    assert set(result["cross_group"]["pairs"]) == {"mnist->fashion", "fashion->mnist"}
    for pair in result["cross_group"]["pairs"].values():
        assert 0.0 <= pair["auc"] <= 1.0 and pair["own_branch_auc"] > 0.8
    # seeded: a second audit gives the very same numbers
    again = audit_run(
        overfit_run.path,
        AuditOptions(
            num_samples=200, max_train=200, cells=3, inception=False, progress=False, data_dir=str(shared_data_dir)
        ),
    )
    for key in ("memorisation", "membership", "cross_group"):
        assert json.loads(json.dumps(again[key])) == result[key]


def test_audit_in_inception_space(overfit_run, shared_data_dir, isolated_cache):
    opts = AuditOptions(
        num_samples=20, max_train=10, cells=1, elbo_samples=1, progress=False, data_dir=str(shared_data_dir)
    )
    result = audit_run(overfit_run.path, dataclasses.replace(opts, inception_path=isolated_cache))
    inception = result["memorisation"]["mnist"]["inception"]
    assert inception["generated"] == 20 and inception["reference_images"] == 10
    assert inception["nn_distance_train"]["median"] < inception["nn_distance_test"]["median"]


def test_bad_input_is_one_line_and_writes_nothing(overfit_run, tmp_path, shared_data_dir, capsys):
    before = sorted(p.name for p in overfit_run.path.iterdir())
    (overfit_run.path / "audit.json").unlink(missing_ok=True)
    assert main(["audit", str(overfit_run.path), *AUDIT_ARGS, "--num-samples", "0"]) == 2
    assert "--num-samples must be at least 1" in capsys.readouterr().err
    assert main(["audit", str(overfit_run.path), *AUDIT_ARGS, "--pathway", "z2"]) == 2
    assert "pathway" in capsys.readouterr().err
    assert main(["audit", str(tmp_path), *AUDIT_ARGS]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (overfit_run.path / "audit.json").exists()
    assert sorted(p.name for p in overfit_run.path.iterdir()) == [n for n in before if n != "audit.json"]


def test_gan_runs_are_refused(tmp_path, shared_data_dir, capsys):
    vae_fields = {k: v for k, v in dataclasses.asdict(ModelConfig()).items() if k != "gan"}
    model = vae_fields | {"kind": "dcgan", "gan": {"noise_dim": 8, "g_features": 4, "d_features": 4}}
    small = {"groups": [{"name": "mnist", "dataset": "mnist", "clients": 1, "train_size": 32, "test_size": 32}]}
    cfg = tiny_config(shared_data_dir, model=model, data=small, train={"rounds": 1})
    run = train_from_config(cfg, runs_dir=tmp_path, progress=False)
    assert main(["audit", str(run.path), *AUDIT_ARGS]) == 2
    err = capsys.readouterr().err
    assert "dcgan model defines no likelihood" in err and err.count("\n") == 1
    assert not (run.path / "audit.json").exists() and not (run.path / "audit").exists()


# --------------------------------------------------------------------------- a fresh model leaks nothing


def test_fresh_model_gives_membership_auc_near_one_half(shared_data_dir):
    """An untrained model has seen no image: its AUC differs from 0.5 by chance (and train/test shift) only.

    With 400 members and 200 non-members per group the AUC's standard deviation under the null is
    sqrt((n1 + n0 + 1) / (12 n1 n0)) = 0.025; the tolerance 0.1 is four of them.
    """
    cfg = tiny_config(shared_data_dir)
    groups = load_groups(cfg)
    model = build_model(cfg).eval()
    tests = [g.test_images for g in groups]
    mia = loss_threshold_attack(model, build_clients(cfg, groups), tests, cfg.group_names, cfg.seed, 400, 1)
    for group in cfg.group_names:
        assert mia["per_group"][group]["members"] == 400 and mia["per_group"][group]["nonmembers"] == 200
        assert abs(mia["per_group"][group]["auc"] - 0.5) < 0.1
    cross = cross_group_leakage(model, [g.train_images for g in groups], tests, cfg.group_names, cfg.seed, 400, 1)
    assert all(abs(p["auc"] - 0.5) < 0.1 for p in cross["pairs"].values())
    samples = generate(model, 0, 200, cfg.seed, None)
    report = memorisation_report(samples, to_uint8(groups[0].train_images), to_uint8(tests[0]), 3, cfg.seed, None)
    assert report["pixel"]["data_copying"]["c_t"] > 0  # noise far from every image: no copying


def test_centralised_hierarchical_and_shared_decoder_models(shared_data_dir):
    """A centralised run's one client holds every group; a shared decoder has no other branch to probe."""
    cfg = tiny_config(shared_data_dir, mode="centralized", model={"hierarchical": True})
    groups = load_groups(cfg)
    model = build_model(cfg).eval()
    tests = [g.test_images for g in groups]
    mia = loss_threshold_attack(model, build_clients(cfg, groups), tests, cfg.group_names, cfg.seed, 50, 1)
    assert set(mia["per_client"]) == {"0/mnist", "0/fashion"}
    assert [mia["per_group"][g]["members"] for g in cfg.group_names] == [50, 50]
    shared = tiny_config(shared_data_dir, model={"decoder_branches": False})
    shared_model = build_model(shared)
    assert isinstance(shared_model, FissionVAE)
    cross = cross_group_leakage(shared_model, [g.train_images for g in groups], tests, shared.group_names, 3, 50, 1)
    assert "skipped" in cross and "pairs" not in cross
