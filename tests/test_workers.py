"""The worker-pool engine: results independent of the worker count, clean shutdown."""

import os
import signal

import pytest
import torch
from tests.helpers import REPO, assert_gone, children, tiny_config

from fissionvae.config import ConfigError, load_config
from fissionvae.federation.engine import Federation, InProcessDispatcher, run_round, train
from fissionvae.federation.workers import AUTO_MIN_SAMPLES, WorkerError, WorkerPool, resolve_workers
from fissionvae.runs import RunDir

TIMING = ("seconds", "samples_per_s")


def same_results(a, b):
    assert [r.client_id for r in a] == [r.client_id for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.weights.keys() == y.weights.keys() and all(torch.equal(x.weights[k], y.weights[k]) for k in x.weights)
        assert {k: v for k, v in x.metrics.items() if k not in TIMING} == {
            k: v for k, v in y.metrics.items() if k not in TIMING
        }


@pytest.fixture(scope="module")
def fed(shared_data_dir):
    """A hierarchical tiny federation in which every client trains every round."""
    return Federation.from_config(
        tiny_config(shared_data_dir, model={"hierarchical": True}, federation={"participation": 1.0})
    )


def test_two_workers_give_the_in_process_rounds_bit_for_bit_then_fail_cleanly(fed):
    weights = fed.initial_state().weights
    before = children()
    expected = run_round(fed, weights, 0, InProcessDispatcher(fed))
    expected2 = run_round(fed, expected.weights, 1, InProcessDispatcher(fed))
    pool = WorkerPool(fed, 2)
    pids = pool.pids
    assert pool.size == 2 and set(pids) <= children() - before
    got = run_round(fed, weights, 0, pool)
    got2 = run_round(fed, got.weights, 1, pool)  # the pool persists across rounds
    assert sorted(t["client"] for t in pool.round_stats) == [0, 1, 2, 3]
    assert {t["worker"] for t in pool.round_stats} == {0, 1} and all(t["cpu_seconds"] > 0 for t in pool.round_stats)
    assert got.participants == expected.participants == [0, 1, 2, 3]
    for e, g in ((expected, got), (expected2, got2)):
        same_results(e.results, g.results)
        assert all(torch.equal(e.weights[k], g.weights[k]) for k in weights)
    # an exception inside a client: reported with its traceback, the pool shut down
    broken = weights | {"encoder.x.head.bias": torch.zeros(3)}  # wrong shape: every client's update raises
    with pytest.raises(WorkerError, match=r"(?s)client \d failed in worker .*size mismatch for encoder.x.head.bias"):
        pool(broken, 2, [0, 1, 2, 3], fed.round_spec(2), {})
    assert_gone(pids, before)
    with pytest.raises(WorkerError, match="closed"):
        pool(weights, 0, [0], fed.round_spec(0), {})


def test_keep_optimizer_run_is_identical_with_one_and_two_workers(tmp_path, shared_data_dir):
    runs = {}
    before = children()
    for n in (1, 2):
        cfg = tiny_config(
            shared_data_dir,
            federation={"client_optimizer": "keep", "workers": n, "participation": 0.75},
            train={"rounds": 2},
        )
        run = RunDir.create(tmp_path, cfg, f"w{n}")
        runs[n] = (train(cfg, run, progress=False), run.metrics())
    assert children() - before == set()
    (one, m1), (two, m2) = runs[1], runs[2]
    assert all(torch.equal(one.weights[k], two.weights[k]) for k in one.weights)
    assert one.client_states.keys() == two.client_states.keys() and len(one.client_states) >= 2
    for cid, state in one.client_states.items():
        other = two.client_states[cid]
        for pid, s in state["state"].items():
            assert all(torch.equal(s[k], other["state"][pid][k]) for k in s)

    def strip(ms):
        return [{k: v for k, v in m.items() if k not in TIMING} for m in ms]

    assert strip(m1) == strip(m2)


def test_a_dead_worker_is_an_error_and_the_pool_shuts_down(fed):
    weights = fed.initial_state().weights
    before = children()
    pool = WorkerPool(fed, 2)
    pids = pool.pids
    os.kill(pids[1], signal.SIGKILL)
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) died"):
        pool(weights, 0, [0, 1, 2, 3], fed.round_spec(0), {})
    assert_gone(pids, before)


def test_train_closes_the_pool_when_the_server_fails(tmp_path, shared_data_dir, monkeypatch):
    cfg = tiny_config(shared_data_dir, federation={"workers": 2})
    run = RunDir.create(tmp_path, cfg, "fails")
    started = []
    original = WorkerPool.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.extend(self.pids)

    def failing_save(state):
        raise OSError("disk full")

    monkeypatch.setattr(WorkerPool, "__init__", recording_init)
    monkeypatch.setattr(RunDir, "save_state", lambda self, state: failing_save(state))
    before = children()
    with pytest.raises(OSError, match="disk full"):
        train(cfg, run, progress=False)
    assert len(started) == 2
    assert_gone(started, before)


def test_auto_rule_uses_the_pool_only_where_it_pays():
    paper = load_config(REPO / "configs/mixed_mnist/fission_ld.yaml")
    sizes = [6000] * 20
    spec = Federation(paper, [], None, []).round_spec(0)  # round_spec reads only the config
    assert resolve_workers(paper, sizes, spec, rounds=70, cores=2) == 2  # 10 expected participants
    assert resolve_workers(paper, sizes, spec, rounds=1, cores=16) == 10
    assert resolve_workers(paper, sizes, spec, rounds=70, cores=1) == 1
    small = [AUTO_MIN_SAMPLES // (10 * 5) - 1] * 20  # one round just under the threshold
    assert resolve_workers(paper, small, spec, rounds=1, cores=2) == 1
    assert resolve_workers(paper, small, spec, rounds=2, cores=2) == 2
    threads = load_config(REPO / "configs/mixed_mnist/fission_ld.yaml", ["federation.threads=2"])
    assert resolve_workers(threads, sizes, spec, rounds=70, cores=2) == 1
    central = load_config(REPO / "configs/mixed_mnist/fission_ld.yaml", ["mode=centralized"])
    assert resolve_workers(central, [120000], Federation(central, [], None, []).round_spec(0), rounds=70, cores=2) == 1
    for n, expected in ((1, 1), (3, 3), (50, 20)):
        explicit = load_config(REPO / "configs/mixed_mnist/fission_ld.yaml", [f"federation.workers={n}"])
        assert resolve_workers(explicit, sizes, spec, rounds=1, cores=2) == expected
    with pytest.raises(ConfigError, match="federation.workers: must be >= 0"):
        load_config(REPO / "configs/mixed_mnist/fission_ld.yaml", ["federation.workers=-1"])
