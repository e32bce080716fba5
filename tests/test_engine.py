"""The in-process engine on real MNIST + FashionMNIST subsets."""

import json

import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.federation.engine import Federation, InProcessDispatcher, run_round, train
from fissionvae.federation.state import CheckpointError, load_state
from fissionvae.runs import RunDir


def weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def group_classifier(groups):
    """Logistic regression MNIST-vs-Fashion on the training images; returns (model, test accuracy)."""
    x = torch.cat([g.train_images.flatten(1) for g in groups])
    y = torch.cat([torch.full((len(g.train_images),), float(i)) for i, g in enumerate(groups)])
    clf = torch.nn.Linear(x.shape[1], 1)
    torch.nn.init.zeros_(clf.weight)
    opt = torch.optim.LBFGS(clf.parameters(), max_iter=100)

    def closure():
        opt.zero_grad()
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(clf(x).squeeze(1), y) + 1e-3 * clf.weight.pow(2).sum()
        )
        loss.backward()
        return loss

    opt.step(closure)
    test = torch.cat([g.test_images.flatten(1) for g in groups])
    labels = torch.cat([torch.full((len(g.test_images),), i) for i, g in enumerate(groups)])
    with torch.no_grad():
        acc = ((clf(test).squeeze(1) > 0).long() == labels).float().mean().item()
    return clf, acc


@pytest.mark.parametrize("hierarchical,optimizer", [(False, "reset"), (True, "reset"), (False, "keep")])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, shared_data_dir, hierarchical, optimizer):
    cfg = tiny_config(shared_data_dir, model={"hierarchical": hierarchical}, federation={"client_optimizer": optimizer})
    straight = train(cfg, RunDir.create(tmp_path, cfg, "straight"), progress=False)
    split = RunDir.create(tmp_path, cfg, "split")
    half = train(cfg, split, max_rounds=2, progress=False)
    assert half.round == 2 and json.loads(split.status_path.read_text())["state"] == "stopped"
    # a process killed after writing round 3's metrics but before its checkpoint
    split.append_metrics([{"type": "round", "round": 3, "bogus": True}])
    resumed = train(cfg, split, progress=False)
    assert resumed.round == straight.round == 4
    assert weights_equal(resumed.weights, straight.weights)
    rounds = [m for m in split.metrics() if m["type"] == "round"]
    assert [m["round"] for m in rounds] == [1, 2, 3, 4] and not any("bogus" in m for m in rounds)


def test_short_federated_run_learns_each_group(tmp_path, shared_data_dir):
    cfg = tiny_config(
        shared_data_dir,
        data={
            "groups": [
                {"name": "mnist", "dataset": "mnist", "clients": 2, "train_size": 2000, "test_size": 500},
                {"name": "fashion", "dataset": "fashion-mnist", "clients": 2, "train_size": 2000, "test_size": 500},
            ]
        },
        model={"latent_dim": 8, "encoder_hidden": [256], "decoder": {"hidden": [256]}},
        federation={"participation": 1.0},
        train={"rounds": 4, "local_epochs": 2},
    )
    run = RunDir.create(tmp_path, cfg, "learn")
    fed = Federation.from_config(cfg)
    train(cfg, run, progress=False, federation=fed)
    rounds = [m for m in run.metrics() if m["type"] == "round"]
    assert rounds[-1]["test/loss"] < 0.8 * rounds[0]["test/loss"]
    assert rounds[-1]["train/loss"] < rounds[0]["train/loss"]
    # each branch's samples are recognised as its own group by a linear group classifier
    clf, test_acc = group_classifier(fed.groups)
    assert test_acc > 0.97
    for g in (0, 1):
        with torch.no_grad():
            samples = fed.model.sample(g, 200, torch.Generator().manual_seed(0)).flatten(1)
            own_share = ((clf(samples).squeeze(1) > 0).long() == g).float().mean().item()
        assert own_share > 0.75, (g, own_share)
    for name in ("reconstructions.png", "samples_mnist.png", "samples_fashion.png"):
        assert (run.images_dir / name).stat().st_size > 1000
    assert (run.plots_dir / "loss.png").stat().st_size > 1000


def test_empty_round_keeps_weights_and_is_logged(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 0.01})
    fed = Federation.from_config(cfg)
    weights = fed.initial_state().weights
    outcome = run_round(fed, weights, 0, InProcessDispatcher(fed))
    assert outcome.results == [] and outcome.participants == [] and weights_equal(outcome.weights, weights)
    run = RunDir.create(tmp_path, cfg, "empty")
    train(cfg, run, max_rounds=1, progress=False, federation=fed)
    (summary,) = [m for m in run.metrics() if m["type"] == "round"]
    assert summary["empty"] and summary["participants"] == 0


def test_centralized_is_one_client_one_epoch_per_round(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, mode="centralized")
    run = RunDir.create(tmp_path, cfg, "central")
    state = train(cfg, run, progress=False)
    assert state.round == cfg.train.centralized_epochs == 2
    clients = [m for m in run.metrics() if m["type"] == "client"]
    assert [(m["client"], m["num_samples"], m["groups"]) for m in clients] == [(0, 800, ["mnist", "fashion"])] * 2
    assert clients[0]["steps"] == 25  # one epoch of 800 images at batch 32


def test_kept_client_optimizer_continues_adam_and_is_checkpointed(tmp_path, shared_data_dir):
    reset_cfg = tiny_config(shared_data_dir, federation={"participation": 1.0}, train={"rounds": 2})
    keep_cfg = tiny_config(
        shared_data_dir, federation={"participation": 1.0, "client_optimizer": "keep"}, train={"rounds": 2}
    )
    reset = train(reset_cfg, RunDir.create(tmp_path, reset_cfg, "reset"), progress=False)
    keep_run = RunDir.create(tmp_path, keep_cfg, "keep")
    keep = train(keep_cfg, keep_run, progress=False)
    assert reset.client_states == {}
    assert sorted(keep.client_states) == [0, 1, 2, 3]
    # Adam's step counter runs on across rounds: 2 rounds x 1 epoch x 200 images / batch 32 = 14 steps
    steps = {float(s["step"]) for s in keep.client_states[0]["state"].values()}
    assert steps == {14.0}
    assert (
        load_state(keep_run.checkpoint_path).client_states[0]["state"].keys() == keep.client_states[0]["state"].keys()
    )
    # round 1 is the same (no state yet), round 2 differs because Adam continues
    first = [m for m in keep_run.metrics() if m["type"] == "round"][0]
    first_reset = [m for m in RunDir.open(tmp_path / "reset").metrics() if m["type"] == "round"][0]
    assert first["test/loss"] == first_reset["test/loss"]
    assert not weights_equal(reset.weights, keep.weights)


def test_centralized_training_keeps_its_optimizer(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, mode="centralized")
    state = train(cfg, RunDir.create(tmp_path, cfg, "central"), progress=False)
    (adam,) = state.client_states.values()
    assert {float(s["step"]) for s in adam["state"].values()} == {50.0}  # 2 epochs x 25 steps


def test_seeded_runs_are_bit_identical_and_seed_matters(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, train={"rounds": 1})
    a = train(cfg, RunDir.create(tmp_path, cfg, "a"), progress=False)
    b = train(cfg, RunDir.create(tmp_path, cfg, "b"), progress=False)
    cfg2 = tiny_config(shared_data_dir, train={"rounds": 1}, seed=4)
    c = train(cfg2, RunDir.create(tmp_path, cfg2, "c"), progress=False)
    assert weights_equal(a.weights, b.weights) and not weights_equal(a.weights, c.weights)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, train={"rounds": 1})
    run = RunDir.create(tmp_path, cfg, "c")
    train(cfg, run, progress=False)
    data = run.checkpoint_path.read_bytes()
    run.checkpoint_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_state(run.checkpoint_path)


def test_invalid_and_missing_replies_are_logged_not_averaged(tmp_path, shared_data_dir):
    cfg = tiny_config(shared_data_dir, federation={"participation": 1.0}, train={"rounds": 1})
    fed = Federation.from_config(cfg)
    honest = InProcessDispatcher(fed)

    def flaky(weights, round_index, participants, spec, client_states):
        replies = honest(weights, round_index, participants[1:], spec, client_states)  # client 0 never answers
        bad = replies[0]
        bad.weights[next(iter(bad.weights))] = bad.weights[next(iter(bad.weights))] * float("nan")
        return replies

    run = RunDir.create(tmp_path, cfg, "flaky")
    state = train(cfg, run, progress=False, federation=fed, dispatch=flaky)
    (summary,) = [m for m in run.metrics() if m["type"] == "round"]
    assert summary["missing"] == [0] and [r["client"] for r in summary["rejected"]] == [1]
    assert "non-finite" in summary["rejected"][0]["reason"] and summary["clients"] == [2, 3]
    assert all(torch.isfinite(v).all() for v in state.weights.values() if v.is_floating_point())
    # group 0's branch was sent only by the rejected client: it keeps its initial weights
    fresh = Federation.from_config(cfg).initial_state().weights
    assert all(torch.equal(state.weights[k], fresh[k]) for k in fresh if k.startswith("branches.0."))
