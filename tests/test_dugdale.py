"""The Dugdale study: its configs (the paper's settings), its pieces, and the quick preset end to end."""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fissionvae import api
from fissionvae.config import load_config
from fissionvae.evaluation.evaluate import EvalOptions
from fissionvae.models.vae import build_model
from fissionvae.runs import RunDir
from fissionvae.studies import common
from fissionvae.studies.cli import register
from fissionvae.studies.dugdale import (
    CONFIGS_DIR,
    FID_TOLERANCE,
    NLL_TOLERANCE,
    PRESETS,
    resolve_preset,
    run_dugdale_study,
    verdict,
)
from fissionvae.studies.dugdale_verdict import verdict_sentence
from fissionvae.studies.figures import loss_curve


def test_configs_have_the_papers_settings():
    fed, cen = load_config(CONFIGS_DIR / "federated.yaml"), load_config(CONFIGS_DIR / "centralized.yaml")
    (group,) = fed.data.groups
    assert (group.dataset, group.clients, group.train_size, group.test_size) == ("mnist", 4, None, None)
    assert fed.mode == "federated" and fed.federation.participation == 1.0
    assert (fed.train.rounds, fed.train.local_epochs, fed.train.batch_size, fed.train.lr) == (15, 6, 128, 1e-3)
    assert cen.mode == "centralized" and cen.effective_rounds == 25 and cen.train.batch_size == 128
    m = fed.model
    assert (m.latent_dim, m.kl_weight, m.prior, m.decoder_branches, m.hierarchical) == (
        200,
        1.0,
        "identical",
        False,
        False,
    )
    assert (m.encoder_kind, m.encoder_hidden, m.norm, m.decoder.kind, m.decoder.hidden) == (
        "conv",
        [16, 32],
        "batch",
        "conv-mirror",
        [32, 16],
    )
    assert 10.5e6 < sum(p.numel() for p in build_model(fed).parameters()) < 11.5e6  # "~11M parameters"
    a, b = common.comparable(fed), common.comparable(cen)
    assert {k for k in a if a[k] != b[k]} == {"name", "mode"}  # the same study but for the mode


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_pairs_a_federated_and_a_centralised_run_of_one_model(name):
    p = PRESETS[name]
    fed, cen = load_config(CONFIGS_DIR / p.federated), load_config(CONFIGS_DIR / p.centralized)
    assert (fed.mode, cen.mode) == ("federated", "centralized") and fed.name != cen.name
    paper = load_config(CONFIGS_DIR / "federated.yaml").model
    assert fed.model == cen.model
    if name in ("fixed", "schedule"):  # our one deviation: no BatchNorm on the decoder's output
        assert not fed.model.decoder.output_norm and paper.decoder.output_norm
        fed.model.decoder.output_norm = True
    assert fed.model == paper
    assert fed.data == cen.data and fed.train == cen.train and fed.federation.participation == 1.0


def test_preset_choice():
    assert (
        resolve_preset(False, None) == "full"
        and resolve_preset(True, None) == "quick"
        and resolve_preset(False, "reduced") == "reduced"
    )
    with pytest.raises(ValueError, match="contradicts"):
        resolve_preset(True, "full")
    with pytest.raises(ValueError, match="unknown"):
        resolve_preset(False, "huge")


def test_loss_curve_counts_passes_over_the_training_set():
    metrics = []
    for r in (1, 2):
        metrics += [{"type": "client", "round": r, "client": c, "num_samples": 250} for c in range(4)]
        metrics.append(
            {
                "type": "round",
                "round": r,
                "train/recon": 10.0 / r,
                "train/kl_prior": 1.0,
                "train/loss": 11.0,
                "test/recon": 9.0,
                "test/kl_prior": 2.0,
                "test/loss": 11.0,
            }
        )
    curve = loss_curve(metrics, epochs_per_round=6, train_images=1000)
    assert curve.x_end.tolist() == [6.0, 12.0] and curve.x_mid.tolist() == [3.0, 9.0]
    assert curve.train["recon"].tolist() == [10.0, 5.0] and curve.test["kl_prior"].tolist() == [2.0, 2.0]


def test_verdict_is_noise_aware_and_checks_the_floor():
    def numbers(fid_fed, nll_fed, fid_hw=1.0, nll_hw=0.5, recon=150.0):
        run = {"fid_half_width": fid_hw, "neg_elbo_half_width": nll_hw, "final_test_recon": recon}
        return {
            "centralized": {"fid": 100.0, "neg_elbo": 100.0, **run},
            "federated": {"fid": fid_fed, "neg_elbo": nll_fed, **run},
            "floor": {"nll": 206.0},
        }

    same = verdict(numbers(101.0, 100.5))
    assert same["verdict"] == "same" and same["beat_floor"]
    assert {k: m["verdict"] for k, m in same["metrics"].items()} == {"fid": "same", "neg_elbo": "same"}
    # a FID gap beyond the noise and the 10% tolerance differs, whatever the NLL says
    assert verdict(numbers(100 * (1 + FID_TOLERANCE) + 3, 100.0))["verdict"] == "differs"
    assert verdict(numbers(100.0, 100 * (1 + NLL_TOLERANCE) + 2))["verdict"] == "differs"
    # within tolerance but beyond a tiny noise, or within a huge noise but beyond tolerance: inconclusive
    assert verdict(numbers(105.0, 100.0, fid_hw=0.1))["verdict"] == "inconclusive"
    assert verdict(numbers(100.0, 103.0, nll_hw=5.0))["verdict"] == "inconclusive"
    # models whose reconstruction term is not below the mean-image floor have learned nothing: said first
    unlearned = verdict(numbers(101.0, 100.5, recon=268.0))
    assert unlearned["verdict"] == "same" and not unlearned["beat_floor"]
    sentence = verdict_sentence(unlearned, numbers(101.0, 100.5, recon=268.0))
    assert sentence.startswith("At least one model's reconstruction term is not below the mean-image floor (206.0")
    smoke = verdict_sentence(same, numbers(101.0, 100.5), smoke_test=True)
    assert smoke.startswith("Smoke test only") and "matched" in smoke
    # a difference names its winner (both metrics are lower-is-better)
    better = numbers(100.0, 90.0)
    assert "-ELBO 90.00 ± 0.50 vs 100.00 ± 0.50 nats/image: differs, the federated model's lower (better)" in (
        verdict_sentence(verdict(better), better)
    )
    worse = numbers(120.0, 100.0)
    assert "FID 120.00 ± 1.00 vs 100.00 ± 1.00: differs, the federated model's higher (worse)" in verdict_sentence(
        verdict(worse), worse
    )


def test_cli_registers_study_dugdale(tmp_path):
    parser = argparse.ArgumentParser(prog="fissionvae")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "study",
            "dugdale",
            "--quick",
            "--out",
            str(tmp_path),
            "--num-samples",
            "20",
            "--runs-dir",
            str(tmp_path / "r"),
        ]
    )
    assert args.quick and args.num_samples == 20 and args.out == tmp_path and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["study", "dugdale", "--preset", "huge"])


def test_matching_runs_ignore_where_the_data_live(tmp_path):
    cfg = load_config(CONFIGS_DIR / "quick.yaml")
    other = load_config(CONFIGS_DIR / "quick.yaml", ["data.dir=/elsewhere", "federation.threads=2"])
    changed = load_config(CONFIGS_DIR / "quick.yaml", ["train.rounds=3"])
    run = RunDir.create(tmp_path, other, "x")
    assert [r.path for r, _ in common.matching_runs(tmp_path, cfg)] == [run.path]
    assert common.matching_runs(tmp_path, changed) == [] and common.matching_runs(tmp_path / "absent", cfg) == []
    assert common.config_digest(cfg) == common.config_digest(other) != common.config_digest(changed)


def test_an_eval_with_other_counts_or_options_is_not_reused(tmp_path):
    opts = EvalOptions(num_samples=20, iw_samples=5)
    saved = {"num_samples": 20, "eval_images": 100, "options": {k: getattr(opts, k) for k in common.EVAL_KEYS}}
    absent = RunDir(tmp_path / "never-read")  # the checkpoint is only read when everything else matches
    assert not common.eval_matches(saved | {"num_samples": 100}, absent, opts)
    assert not common.eval_matches(saved | {"options": saved["options"] | {"iw_samples": 100}}, absent, opts)
    assert not common.eval_matches(
        saved, absent, EvalOptions(num_samples=None, iw_samples=5)
    )  # full protocol = 100 images


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path, shared_data_dir, inception_path, monkeypatch):
    """Resume a stopped run, train the other, evaluate both, draw the page; then reuse everything."""
    monkeypatch.setenv("FISSIONVAE_INCEPTION", str(inception_path))
    runs_dir, out = tmp_path / "runs", tmp_path / "page"
    stopped = api.train_from_config(
        CONFIGS_DIR / "quick.yaml",
        runs_dir=runs_dir,
        name="stopped-by-hand",
        data_dir=shared_data_dir,
        max_rounds=1,
        progress=False,
    )
    assert common.read_status(stopped)["state"] == "stopped"

    page = run_dugdale_study(out, runs_dir, shared_data_dir, quick=True, num_samples=20, progress=False)

    text = page.read_text()
    for title in (
        "Figure 1",
        "Figure 2",
        "Figure 3",
        "Figure 4",
        "| FID",
        "| IS",
        "-ELBO",
        "images processed",
        "wall time",
    ):
        assert title in text, title
    numbers = json.loads((out / "dugdale.json").read_text())
    assert numbers["sentence"] in text and numbers["verdict"]["verdict"] in ("same", "differs", "inconclusive")
    assert text.startswith("# Dugdale (2023): federated vs centralised conv VAE on MNIST (SMOKE TEST)")
    assert numbers["sentence"].startswith("Smoke test only") and numbers["smoke_test"]
    assert "| floor (mean image) |" in text and numbers["floor"]["nll"] > 0
    fed, cen = numbers["federated"], numbers["centralized"]
    assert (
        fed["run"] == str(stopped.path) and common.read_status(stopped)["state"] == "finished"
    )  # resumed, not retrained
    assert fed["rounds_done"] == cen["rounds_done"] == 2 and fed["images_processed"] == cen["images_processed"] == 2048
    for n in (fed, cen):
        assert n["generated"] == n["fid_generated"] == 20 and n["fid_real"] == n["nll_images"] == 100 and n["reduced"]
        assert n["fid_half_width"] > 0 and n["neg_elbo_half_width"] > 0
        assert (
            math.isfinite(n["fid"])
            and n["fid"] > 0
            and 1 - 1e-6 <= n["is_mean"] <= 10
            and 0 <= n["confident_share"] <= 1
        )
        assert n["iw_nll"] <= n["neg_elbo"] + 1e-6 and n["train_wall_seconds"] > 0
    for name in ("figure1_reconstructions.png", "figure2_generations.png", "figure3_losses.png", "figure4_tsne.png"):
        assert f"]({name})" in text and Image.open(out / name).size[0] > 300
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(["stopped-by-hand", Path(cen["run"]).name])

    # a second call reuses both finished runs and both evaluations: nothing is trained or evaluated again
    first_figure = np.asarray(Image.open(out / "figure2_generations.png"))
    monkeypatch.setattr(api, "train", lambda *a, **k: pytest.fail("a finished run was trained again"))
    monkeypatch.setattr(common, "evaluate_run", lambda *a, **k: pytest.fail("a matching eval.json was recomputed"))
    run_dugdale_study(out, runs_dir, shared_data_dir, quick=True, num_samples=20, progress=False)
    again = json.loads((out / "dugdale.json").read_text())
    assert again["federated"]["fid"] == fed["fid"] and again["centralized"]["neg_elbo"] == cen["neg_elbo"]
    assert np.array_equal(np.asarray(Image.open(out / "figure2_generations.png")), first_figure)
