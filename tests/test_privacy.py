"""Differential privacy: accounting against Opacus's published values, measured clipping bounds,
the no-op limit, config rules, resume, and the same numbers on the in-process engine and the worker pool."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from opacus.accountants import create_accountant
from tests.helpers import tiny_config

from fissionvae.config import ConfigError
from fissionvae.federation.engine import Federation, InProcessDispatcher, run_round, train
from fissionvae.federation.workers import WorkerPool
from fissionvae.models.vae import build_model
from fissionvae.privacy import accounting
from fissionvae.privacy.client_level import dp_fedavg
from fissionvae.privacy.plan import owners_of
from fissionvae.privacy.record import private_steps
from fissionvae.runs import RunDir

RECORD = {"mode": "record", "noise_multiplier": 1.0, "delta": 1e-5, "clip_norm": 1.0}
CLIENT = {"mode": "client", "noise_multiplier": 0.5, "delta": 1e-5, "clip_norm": 5.0}


def equal_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("kind, published, tol", [("rdp", 7.32911117143, 1e-9), ("prv", 6.777395712150674, 0.01)])
def test_accountant_gives_opacus_published_epsilon_when_steps_come_in_rounds(kind, published, tol):
    """Opacus's own test values (accountants_test.py): sigma 1.5, q 0.04, 2250 steps, delta 1e-5
    (PRV is numerical: its epsilon is within eps_error = 0.01). Recorded as 9 rounds of 250 steps the
    history merges into one entry and gives the epsilon of Opacus's accountant stepped 2250 times."""
    history: list = []
    for _ in range(9):
        history = accounting.record(history, 1.5, 0.04, 250)
    assert history == [[1.5, 0.04, 2250]]
    assert accounting.epsilon(history, 1e-5, kind) == pytest.approx(published, abs=tol)
    stepped = create_accountant(kind)
    for _ in range(2250):
        stepped.step(noise_multiplier=1.5, sample_rate=0.04)
    assert accounting.epsilon(history, 1e-5, kind) == stepped.get_epsilon(delta=1e-5)
    # heterogeneous rounds compose: more steps or less noise can only cost more
    assert accounting.epsilon(accounting.record(history, 1.0, 0.04, 1), 1e-5, kind) > published
    assert accounting.epsilon([], 1e-5, kind) == 0.0 and accounting.epsilon([[0.0, 0.1, 1]], 1e-5, kind) == math.inf


def test_noise_calibration_matches_opacus_published_multiplier():
    assert accounting.noise_for(8.0, 1e-5, 0.04, 2000, "rdp") == pytest.approx(1.3562, abs=1e-4)


# --------------------------------------------------------------------------- record level: clipping, measured


def summed_gradient(model, groups, images, group_ids, clip, noise, mode):
    """The summed clipped gradient of one DP-SGD step (SGD with lr 0: the weights stay put)."""
    params = model.owned_parameters(groups)
    sgd = torch.optim.SGD(params, lr=0.0)
    with private_steps(model, sgd, clip, noise, len(images), mode, torch.Generator().manual_seed(0)) as step:
        step(images, group_ids, torch.Generator().manual_seed(1))
    return torch.cat([p.grad.flatten() for p in params]) * len(images)  # the optimiser divides by the batch


def client_batch(data_dir, **model):
    fed = Federation.from_config(tiny_config(data_dir, privacy=RECORD, model=model))
    client = fed.clients[0]
    return fed.model, client.groups, client.images[:8], client.group_ids[:8]


@pytest.mark.parametrize("mode, hierarchical", [("ghost", False), ("hooks", False), ("hooks", True)])
def test_each_image_contributes_at_most_the_clip_norm(shared_data_dir, mode, hierarchical):
    """Each image's clipped gradient, measured through the DP step on a batch of that image alone
    (the VAE's sampling noise differs between batches, so images are measured one by one).
    The hierarchical model runs its decoder twice per image: hooks add both uses up."""
    model, groups, x, g = client_batch(shared_data_dir, hierarchical=hierarchical)
    clip = 5.0
    alone = [summed_gradient(model, groups, x[i : i + 1], g[i : i + 1], clip, 0.0, mode) for i in range(8)]
    raw = [summed_gradient(model, groups, x[i : i + 1], g[i : i + 1], math.inf, 0.0, mode) for i in range(8)]
    norms = torch.stack([a.norm() for a in alone])
    assert min(r.norm() for r in raw) > clip  # every raw per-image gradient exceeds the clip ...
    assert norms.max() <= clip * (1 + 1e-4) and norms.min() >= clip * (1 - 1e-4)  # ... and is cut to it
    for a, r in zip(alone, raw, strict=True):  # scaled, not bent
        assert torch.nn.functional.cosine_similarity(a, r, dim=0) > 0.9999


@pytest.mark.parametrize("hierarchical, modes", [(False, ("ghost", "hooks")), (True, ("hooks", "functorch"))])
def test_without_noise_and_clip_a_private_step_is_the_plain_gradient(shared_data_dir, hierarchical, modes):
    """The no-op limit, per step (runs are not bit-identical: DP-SGD draws Poisson batches, and Opacus
    sums the per-image gradients, then divides by the expected batch, where plain training back-propagates the mean)."""
    model, groups, x, g = client_batch(shared_data_dir, hierarchical=hierarchical)
    params = model.owned_parameters(groups)
    model.zero_grad()
    model.terms(x, g, torch.Generator().manual_seed(1))["loss"].mean().backward()
    plain = torch.cat([p.grad.flatten() for p in params]) * len(x)
    model.zero_grad()
    for mode in modes:
        assert torch.allclose(summed_gradient(model, groups, x, g, math.inf, 0.0, mode), plain, rtol=1e-4, atol=1e-3)
    assert all(p.requires_grad for p in model.parameters())  # the template is restored for the next client
    noisy = summed_gradient(model, groups, x, g, 1.0, 2.0, modes[0])  # noise N(0, (2 * 1)^2) per coordinate
    assert noisy.std().item() == pytest.approx(2.0, rel=0.02)


# --------------------------------------------------------------------------- client level: DP-FedAvg


def test_one_joint_clip_bounds_a_whole_client_and_every_sum_gets_the_same_noise(shared_data_dir):
    cfg = tiny_config(shared_data_dir, privacy=CLIENT, federation={"participation": 1.0})
    model = build_model(cfg)
    owners = owners_of(model, [[0], [0], [1], [1]])
    global_w = {k: v.detach().clone() for k, v in model.state_dict().items()}
    big = {k: global_w[k] + 3.0 for k in model.owned_keys([0])}  # encoder + branch 0 update, norm >> 1
    gen = torch.Generator().manual_seed(0)
    new = dp_fedavg(global_w, [(0, big)], owners, 1.0, 0.0, 1.0, gen)
    summed = {k: (new[k].double() - global_w[k].double()) * owners[k] for k in owners}  # W_k = q * owners, q = 1
    joint = math.sqrt(sum(float(summed[k].pow(2).sum()) for k in model.owned_keys([0])))
    assert joint == pytest.approx(1.0, rel=1e-5)  # encoder and branch clipped together to C = 1
    assert all(torch.equal(new[k], global_w[k]) for k in model.owned_keys([1]) if k.startswith("branches.1"))
    # noise on every sum, also the branch nobody sent: std sigma * C / W_k
    noisy = dp_fedavg(global_w, [(0, big)], owners, 1.0, 2.0, 1.0, gen)
    for prefix, owners_count in (("encoder.", 4), ("branches.0.", 2), ("branches.1.", 2)):
        keys = [k for k in owners if k.startswith(prefix)]
        centred = torch.cat([(noisy[k].double() - new[k].double()).flatten() for k in keys]) * owners_count
        assert centred.std().item() == pytest.approx(2.0, rel=0.05), prefix


def test_client_level_without_noise_or_clip_is_bit_identical_to_fedavg(shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 1.0})
    off = {"mode": "client", "noise_multiplier": 0.0, "delta": 1e-5, "clip_norm": math.inf}
    fed, dp = (
        Federation.from_config(cfg),
        Federation.from_config(tiny_config(shared_data_dir, privacy=off, federation={"participation": 1.0})),
    )
    weights = fed.initial_state().weights
    plain = run_round(fed, weights, 0, InProcessDispatcher(fed))
    private = run_round(dp, weights, 0, InProcessDispatcher(dp))
    assert equal_weights(plain.weights, private.weights)
    assert not equal_weights(plain.weights, weights)


# --------------------------------------------------------------------------- engines and resume


def test_worker_pool_gives_the_in_process_private_round_bit_for_bit(shared_data_dir):
    """Record level: DP-SGD in worker processes. (Client level adds nothing there: workers run the
    plain local update and the server's run_round does the private part, the same for every dispatcher.)"""
    fed = Federation.from_config(tiny_config(shared_data_dir, privacy=RECORD))
    weights = fed.initial_state().weights
    expected = run_round(fed, weights, 1, InProcessDispatcher(fed))
    with WorkerPool(fed, 2) as pool:
        got = run_round(fed, weights, 1, pool)
    assert expected.participants == got.participants and expected.participants
    assert equal_weights(expected.weights, got.weights)


def test_resume_continues_weights_and_accounting_exactly(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, privacy=RECORD | {"accountant": "rdp"}, train={"rounds": 3})
    whole = train(cfg, RunDir.create(tmp_path, cfg, "whole"), progress=False)
    run = RunDir.create(tmp_path, cfg, "split")
    train(cfg, run, max_rounds=2, progress=False)
    resumed = train(cfg, run, progress=False)
    assert resumed.privacy == whole.privacy and equal_weights(resumed.weights, whole.weights)
    sizes = Federation.from_config(cfg, with_clients=False).client_sizes
    rounds = {cid: sum(1 for m in run.metrics() if m["type"] == "client" and m["client"] == cid) for cid in range(4)}
    for cid, history in whole.privacy["clients"].items():  # each client accounted over the rounds it took part in
        assert history == [[1.0, 32 / sizes[cid], rounds[cid] * math.ceil(sizes[cid] / 32)]]
    last = run.metrics()[-1]
    assert last["privacy/epsilon_max"] == max(whole.privacy["epsilon"].values()) > 0
    assert (run.path / "privacy.json").is_file()


# --------------------------------------------------------------------------- config rules


@pytest.mark.parametrize(
    "privacy, model, message",
    [
        ({"mode": "record", "delta": 1e-5, "clip_norm": 1.0}, {}, "give exactly one"),
        (RECORD | {"target_epsilon": 3.0}, {}, "give exactly one"),
        (RECORD | {"delta": None}, {}, "privacy.delta"),
        (RECORD | {"delta": 1.5}, {}, "privacy.delta"),
        (RECORD | {"clip_norm": -1.0}, {}, "privacy.clip_norm"),
        (RECORD | {"clip_norm": math.inf}, {}, "only allowed with noise_multiplier 0"),
        (RECORD | {"epsilon": 3.0}, {}, "unknown config key"),
        ({"delta": 1e-5}, {}, "privacy.mode is 'none'"),
        (RECORD, {"encoder_kind": "conv", "encoder_hidden": [8], "norm": "batch"}, "model.norm: group"),
        (CLIENT | {"grad_sample_mode": "hooks"}, {}, "only for privacy.mode 'record'"),
        (RECORD | {"mode": "cohort"}, {}, "privacy.mode"),
        (RECORD, {"likelihood": "gaussian"}, "model.likelihood"),
        (RECORD | {"grad_sample_mode": "ghost"}, {"hierarchical": True}, "use auto, hooks or functorch"),
    ],
)
def test_bad_privacy_settings_are_errors_naming_the_option(shared_data_dir, privacy, model, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(shared_data_dir, privacy=privacy, model=model)


def test_group_norm_conv_models_are_supported(shared_data_dir):
    model = {
        "encoder_kind": "conv",
        "encoder_hidden": [8],
        "norm": "group",
        "decoder": {"kind": "conv-mirror", "hidden": [8]},
    }
    cfg = tiny_config(shared_data_dir, privacy=RECORD, model=model)
    assert cfg.model.norm == "group"
    with pytest.raises(ConfigError, match="whole clients"):
        tiny_config(shared_data_dir, privacy=CLIENT, mode="centralized")


def test_cli_trains_privately_and_refuses_bad_settings_before_writing(tmp_path, shared_data_dir, capsys):
    from fissionvae.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(shared_data_dir, privacy=RECORD).to_dict()))
    runs = tmp_path / "runs"
    bad = ["--set", "privacy.noise_multiplier=null"]
    assert main(["train", "--config", str(cfg), *bad, "--runs-dir", str(runs)]) == 2
    assert "privacy.target_epsilon / privacy.noise_multiplier" in capsys.readouterr().err and not runs.exists()
    args = ["--set", "train.rounds=1", "--runs-dir", str(runs), "--name", "r", "--no-progress"]
    assert main(["train", "--config", str(cfg), *args]) == 0
    assert "privacy (record level): worst client epsilon" in capsys.readouterr().out
    report = json.loads((runs / "r" / "privacy.json").read_text())
    assert report["mode"] == "record" and report["epsilon_max"] == max(report["epsilon"]) > 0


def test_study_identity_of_runs_without_privacy_is_unchanged(shared_data_dir):
    """Runs made before the privacy section existed keep their config digest; private runs differ."""
    from fissionvae.studies.common import comparable, config_digest

    plain, private = tiny_config(shared_data_dir), tiny_config(shared_data_dir, privacy=RECORD)
    assert "privacy" not in comparable(plain) and comparable(private)["privacy"]["mode"] == "record"
    assert config_digest(plain) != config_digest(private)
