"""The FedGAN baseline: a DCGAN through the engine's own round loop, aggregation, resume and evaluation."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from tests.helpers import REPO, tiny_config

from fissionvae.config import ConfigError, ModelConfig, load_config
from fissionvae.data.federated import load_groups
from fissionvae.evaluation.collapse import collapse_report, near_duplicates
from fissionvae.evaluation.evaluate import (
    EvalOptions,
    evaluate_run,
    pooled_stats,
    summary_lines,
    to_uint8,
)
from fissionvae.evaluation.fid import (
    InceptionFeatures,
    StatsCache,
    feature_stats,
    fid_from_stats,
)
from fissionvae.evaluation.report import make_report
from fissionvae.federation import engine
from fissionvae.federation.aggregation import aggregate
from fissionvae.federation.client import LocalTrainSpec, local_images, minibatches
from fissionvae.federation.engine import (
    Federation,
    InProcessDispatcher,
    run_round,
    train,
)
from fissionvae.models.gan import DCGAN
from fissionvae.runs import RunDir

VAE_DEFAULTS = {k: v for k, v in dataclasses.asdict(ModelConfig()).items() if k != "gan"}


def gan_config(data_dir, gan=None, train=None, **sections):
    """tiny_config's federation with a small DCGAN (the VAE fields back at their defaults)."""
    model = VAE_DEFAULTS | {"kind": "dcgan", "gan": {"noise_dim": 32, "g_features": 16, "d_features": 16} | (gan or {})}
    return tiny_config(data_dir, model=model, train={"lr": 2e-4} | (train or {}), **sections)


def weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- config


def test_model_kind_switch_is_strict():
    cfg = load_config(REPO / "configs/mixed_mnist/fedgan.yaml")
    assert (
        cfg.model.kind == "dcgan"
        and cfg.model.gan.noise_dim == 100
        and (cfg.model.gan.beta1, cfg.model.gan.beta2) == (0.5, 0.999)
    )
    assert (cfg.train.rounds, cfg.train.local_epochs, cfg.train.batch_size, cfg.train.lr) == (70, 5, 32, 2e-4)
    assert cfg.federation.participation == 0.5 and sum(g.clients for g in cfg.data.groups) == 20
    assert load_config(REPO / "configs/mixed_mnist/fedgan.yaml", ["mode=centralized"]).effective_rounds == 70
    bad = {
        "model.decoder_branches=true": "model.decoder_branches: a VAE setting, but model.kind is 'dcgan'",
        "model.latent_dim=100": "model.latent_dim: a VAE setting.*model.gan",
        "model.gan.noise_dim=0": "model.gan.noise_dim: must be >= 1",
        "model.gan.beta1=1.0": "model.gan.beta1: must be in \\[0, 1\\)",
        "model.gan.width=3": "unknown config key\\(s\\): model.gan.width",
        "train.local_steps=0": "train.local_steps: must be >= 1",
    }
    for override, match in bad.items():
        with pytest.raises(ConfigError, match=match):
            load_config(REPO / "configs/mixed_mnist/fedgan.yaml", [override])
    with pytest.raises(ConfigError, match="model.gan: only for model.kind: dcgan"):
        load_config(REPO / "configs/mixed_mnist/fedvae.yaml", ["model.gan.noise_dim=10"])


def test_dcgan_shapes_for_grey_28_and_rgb_32():
    gan_cfg = load_config(REPO / "configs/mixed_mnist/fedgan.yaml").model.gan
    for shape in ((1, 28, 28), (3, 32, 32)):
        model = DCGAN(gan_cfg, ["a", "b"], shape).eval()
        images = model.sample("b", 5, torch.Generator().manual_seed(0))
        assert images.shape == (5, *shape) and images.min() >= 0 and images.max() <= 1
        assert model.discriminator(images * 2 - 1).shape == (5,)
    with pytest.raises(ConfigError, match="image side 30"):
        DCGAN(gan_cfg, ["a"], (1, 30, 30))
    with pytest.raises(ValueError, match="no group priors"):
        model.sample("a", 2, prior_group="b")


def test_local_steps_span_reshuffled_passes():
    spec = LocalTrainSpec(seed=0, round=0, epochs=5, batch_size=4, lr=1e-3, steps=5)
    batches = list(minibatches(10, spec, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4]  # one full pass of 10 images, then two more batches
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert local_images(10, spec) == sum(len(b) for b in batches) == 18
    epochs = dataclasses.replace(spec, steps=None, epochs=2)
    assert [len(b) for b in minibatches(10, epochs, torch.Generator())] == [4, 4, 2] * 2 and local_images(
        10, epochs
    ) == 20


# --------------------------------------------------------------------------- federation


def test_fedgan_round_averages_both_networks_by_sample_count(shared_data_dir, monkeypatch):
    sizes = {
        "groups": [
            {"name": "mnist", "dataset": "mnist", "clients": 2, "train_size": 300, "test_size": 50},
            {"name": "fashion", "dataset": "fashion-mnist", "clients": 2, "train_size": 500, "test_size": 50},
        ]
    }
    cfg = gan_config(shared_data_dir, data=sizes, federation={"participation": 1.0}, train={"local_steps": 2})
    fed = Federation.from_config(cfg)
    start = fed.initial_state().weights
    calls = []
    monkeypatch.setattr(
        engine, "aggregate", lambda w, results, rule: calls.append(results) or aggregate(w, results, rule)
    )
    outcome = run_round(fed, start, 0, InProcessDispatcher(fed))
    (results,) = calls  # the engine's own aggregate, called once with every reply
    assert [r.num_samples for r in results] == [150, 150, 250, 250]
    assert all(sorted(r.weights) == sorted(start) for r in results)  # every client sends both networks
    assert {k.split(".")[0] for k in start} == {"generator", "discriminator"}
    for key, before in start.items():
        if before.is_floating_point():
            expected = sum(r.weights[key].double() * r.num_samples for r in results) / 800
            assert torch.allclose(outcome.weights[key].double(), expected, atol=1e-6), key
        else:  # BatchNorm's num_batches_tracked: the maximum over senders (2 steps; D sees 3 batches a step)
            assert outcome.weights[key] == max(r.weights[key] for r in results)
    changed = {
        k.split(".")[0] for k in start if start[k].is_floating_point() and not torch.equal(start[k], outcome.weights[k])
    }
    assert changed == {"generator", "discriminator"}


@pytest.mark.parametrize("optimizer", ["reset", "keep"])
def test_resume_is_bit_identical(tmp_path, shared_data_dir, optimizer):
    cfg = gan_config(shared_data_dir, federation={"client_optimizer": optimizer}, train={"rounds": 3, "local_steps": 3})
    straight = train(cfg, RunDir.create(tmp_path, cfg, "straight"), progress=False)
    split = RunDir.create(tmp_path, cfg, "split")
    assert train(cfg, split, max_rounds=1, progress=False).round == 1
    resumed = train(cfg, split, progress=False)
    assert resumed.round == 3 and weights_equal(resumed.weights, straight.weights)
    steps = [m["steps"] for m in split.metrics() if m["type"] == "client"]
    assert steps and set(steps) == {3}  # train.local_steps, not epochs
    if optimizer == "keep":
        assert resumed.client_states.keys() == straight.client_states.keys() and resumed.client_states
        for cid, state in resumed.client_states.items():
            assert set(state) == {"g", "d"}
            for net in ("g", "d"):
                for k, v in state[net]["state"].items():
                    assert all(torch.equal(v[s], straight.client_states[cid][net]["state"][k][s]) for s in v)
    else:
        assert resumed.client_states == {}


# --------------------------------------------------------------------------- a short real run, evaluated


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, shared_data_dir):
    data = {
        "groups": [
            {"name": "mnist", "dataset": "mnist", "clients": 1, "train_size": 1200, "test_size": 25},
            {"name": "fashion", "dataset": "fashion-mnist", "clients": 1, "train_size": 1200, "test_size": 25},
        ]
    }
    # about 16 CPU-seconds: 4 rounds of FedAvg over one client per group, 100 local steps each
    cfg = gan_config(
        shared_data_dir,
        data=data,
        federation={"participation": 1.0},
        train={"rounds": 4, "local_steps": 100},
        eval={"test_per_group": 25},
    )
    run = RunDir.create(tmp_path_factory.mktemp("gan"), cfg, "fedgan")
    train(cfg, run, progress=False)
    return run


def test_short_run_discriminator_stays_bounded(gan_run):
    rounds = [m for m in gan_run.metrics() if m["type"] == "round"]
    assert [m["round"] for m in rounds] == [1, 2, 3, 4] and all(m["clients"] == [0, 1] for m in rounds)
    for m in rounds:
        for key in ("train/d_loss", "test/d_loss", "train/g_loss", "test/g_loss"):
            assert math.isfinite(m[key]) and 0 < m[key] < 5, (m["round"], key, m[key])  # log 4 = 1.39 at equilibrium
        assert 0 < m["test/d_fake"] < 1 and 0 < m["test/d_real"] < 1
    assert all(m["test/sample_nn_rms"] > 0 and m["test/real_nn_rms"] > 0 for m in rounds)
    assert (gan_run.images_dir / "samples.png").stat().st_size > 1000 and (
        gan_run.plots_dir / "loss.png"
    ).stat().st_size > 1000


def test_evaluate_gan_run_fid_beats_uniform_noise(gan_run, isolated_cache):
    result = evaluate_run(gan_run.path, EvalOptions(inception=isolated_cache, tsne_points=25, progress=False))
    saved = json.loads((gan_run.path / "eval.json").read_text())
    assert saved["num_samples"] == 50 and not saved["reduced"] and saved["pathway"] == "z"
    assert "likelihood" in saved["nll"]["skipped"] and "overall" not in saved["nll"]
    assert all(0 <= g["purity"] <= 1 for g in saved["classifier"]["per_group"].values())
    pool = saved["classifier"]["pool"]
    assert pool["classes"] == 20 and sum(pool["group_share"].values()) == pytest.approx(1.0)
    assert isinstance(saved["collapse"]["collapsed"], bool) and 0 <= saved["collapse"]["near_duplicates"]["share"] <= 1
    assert sorted(saved["pictures"]) == [
        "samples_fashion_16x16.png",
        "samples_mnist_16x16.png",
        "tsne_real_vs_generated.png",
    ]
    assert any(line.startswith("NLL: skipped") for line in summary_lines(result))

    # the same real statistics (cached by the evaluation) against as many uniform-noise images
    cfg = gan_run.load_config()
    extractor = InceptionFeatures(isolated_cache, progress=False)
    cache = StatsCache()
    groups = load_groups(cfg)
    real = pooled_stats(
        [cache.load(f"{g.dataset}-test", cache.key(to_uint8(g.test_images), extractor.identity)) for g in groups]
    )
    noise = torch.rand(50, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise_fid = fid_from_stats(real, feature_stats(extractor(to_uint8(noise)).astype(np.float64)))
    assert result["fid"]["overall"] < 0.8 * noise_fid, (result["fid"]["overall"], noise_fid)

    md = make_report([gan_run.path], gan_run.path.parent / "report").read_text()
    assert "FedGAN (DCGAN)" in md and "paper 118.52" in md and "(no likelihood)" in md

    # --test-size: a seeded test subset per group as the evaluation set, flagged as reduced
    sub = evaluate_run(
        gan_run.path,
        EvalOptions(fid=False, tsne=False, test_size=10, num_samples=20, result_name="eval-subset", progress=False),
    )
    assert sub["reduced"] and sub["test_size"] == 10 and sub["eval_images"] == 20 and "fid" not in sub
    assert (gan_run.path / "eval-subset.json").is_file() and json.loads((gan_run.path / "eval.json").read_text())[
        "num_samples"
    ] == 50


def test_collapse_measures_flag_copies_not_real_images(shared_data_dir):
    cfg = tiny_config(
        shared_data_dir,
        data={
            "groups": [
                {"name": "mnist", "dataset": "mnist", "clients": 1, "train_size": 10, "test_size": 600},
                {"name": "fashion", "dataset": "fashion-mnist", "clients": 1, "train_size": 10, "test_size": 600},
            ]
        },
    )
    groups = load_groups(cfg)
    real = [to_uint8(g.test_images) for g in groups]
    halves = [r[300:] for r in real]  # held-out real images as "samples"
    dup = near_duplicates(halves, real)
    assert dup["share"] == dup["real_share"] == 0.0 and dup["images"] == dup["real_images"] == 600
    uniform = {"coverage_entropy_normalised": 0.99, "classes_covered": 20, "classes": 20, "group_share": {}}
    assert not collapse_report(halves, real, cfg.group_names, uniform)["collapsed"]
    copies = [r[:1].repeat(300, 1, 1, 1) for r in real]  # one image per group, repeated
    report = collapse_report(copies, real, cfg.group_names, uniform)
    assert report["collapsed"] and report["near_duplicates"]["share"] == 1.0
    narrow = uniform | {"coverage_entropy_normalised": 0.3}
    assert collapse_report(halves, real, cfg.group_names, narrow)["reasons"] == ["class coverage 0.300 < 0.8"]
