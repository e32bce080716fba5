"""Hostile client replies, robust aggregation and update clipping.

Every class of hostile reply is tried at the ``run_round`` level (the path every engine takes):
it must be rejected with its reason, and the new global model must be bit-identical to the one
aggregated from the honest replies alone. The robust rules and the clip are checked on small
constructed cases whose numbers are worked out by hand.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.data.federated import build_clients, load_groups, partition_sizes
from fissionvae.federation.aggregation import AggregationRule, aggregate
from fissionvae.federation.client import ClientResult
from fissionvae.federation.clipping import update_norm
from fissionvae.federation.dispatch import InProcessDispatcher, Replayed
from fissionvae.federation.engine import Federation, run_round
from fissionvae.federation.replies import Rejected

VICTIM = 1  # the client whose reply is made hostile (group 0, mnist)


@pytest.fixture(scope="module")
def honest(shared_data_dir):
    """A tiny federation where all 4 clients take part in round 0, and their honest replies."""
    fed = Federation.from_config(tiny_config(shared_data_dir, federation={"participation": 1.0}))
    weights = fed.initial_state().weights
    replies = InProcessDispatcher(fed)(weights, 0, [0, 1, 2, 3], fed.round_spec(0), {})
    return fed, weights, replies


def _first_float_key(r: ClientResult) -> str:
    return next(k for k in sorted(r.weights) if r.weights[k].is_floating_point())


class Weird(torch.Tensor):
    """A tensor subclass: its methods could run arbitrary code on the server."""


def _tamper(kind: str, r: ClientResult) -> list:
    """The victim's reply(ies) after an attacker of class ``kind`` touched it."""
    key = _first_float_key(r)
    w = r.weights
    counts = {
        "count-other": r.num_samples + 1,
        "count-zero": 0,
        "count-negative": -5,
        "count-nan": float("nan"),
        "count-inf": float("inf"),
        "count-fraction": 2.5,
        "count-string": "12",
        "count-bool": True,
        "count-1e12": 10**12,
        "count-1e400": 10**400,
        "count-float-equal": float(r.num_samples),
    }
    if kind in counts:
        return [dataclasses.replace(r, num_samples=counts[kind])]
    weight_changes = {
        "nan-weights": lambda t: t.clone().fill_(float("nan")),
        "inf-weights": lambda t: t.clone().fill_(float("inf")),
        "meta-tensor": lambda t: torch.empty_like(t, device="meta"),
        "sparse-tensor": lambda t: t.to_sparse(),
        "numpy-array": lambda t: t.numpy(),
        "python-list": lambda t: t.tolist(),
        "tensor-subclass": lambda t: t.as_subclass(Weird),
        "wrong-dtype": lambda t: t.double(),
        "wrong-shape": lambda t: t.flatten()[:-1],
    }
    if kind in weight_changes:
        return [dataclasses.replace(r, weights=w | {key: weight_changes[kind](w[key])})]
    others = {
        "missing-key": {"weights": {k: v for k, v in w.items() if k != key}},
        "extra-key": {"weights": w | {"branches.1.extra": torch.zeros(1)}},
        "non-string-key": {"weights": {7 if k == key else k: v for k, v in w.items()}},
        "weights-not-a-dict": {"weights": None},
        "other-groups": {"groups": [1]},
        "groups-not-a-list": {"groups": "0"},
        "undrawn-client": {"client_id": 99},
        "client-id-string": {"client_id": str(r.client_id)},
        "client-id-bool": {"client_id": True},
        "nan-metric": {"metrics": r.metrics | {"loss": float("nan")}},
        "inf-metric": {"metrics": r.metrics | {"steps": float("inf")}},
        "string-metric": {"metrics": r.metrics | {"loss": "low"}},
        "other-metric-names": {"metrics": r.metrics | {"bonus": 1.0}},
        "metrics-not-a-dict": {"metrics": [1.0]},
    }
    if kind in others:
        return [dataclasses.replace(r, **others[kind])]
    if kind == "duplicate":
        return [r, dataclasses.replace(r, weights={k: v * 1e6 for k, v in w.items()})]
    if kind == "not-a-result":
        return [{"client_id": r.client_id, "weights": w}]
    if kind == "undecodable":  # what an engine hands over for a reply it could not decode
        return [Rejected(r.client_id, f"client {r.client_id}: unreadable reply (KeyError: 'meta')")]
    raise AssertionError(kind)


HOSTILE = {
    "count-other": "partition holds",
    "count-zero": "positive int",
    "count-negative": "positive int",
    "count-nan": "positive int",
    "count-inf": "positive int",
    "count-fraction": "positive int",
    "count-string": "positive int",
    "count-bool": "positive int",
    "count-1e12": "positive int",
    "count-1e400": "positive int",
    "count-float-equal": "positive int",
    "nan-weights": "non-finite",
    "inf-weights": "non-finite",
    "meta-tensor": "expected dense on cpu",
    "sparse-tensor": "expected dense on cpu",
    "numpy-array": "not a plain torch.Tensor",
    "python-list": "not a plain torch.Tensor",
    "tensor-subclass": "not a plain torch.Tensor",
    "wrong-dtype": "float64",
    "wrong-shape": "expected",
    "missing-key": "keys differ",
    "extra-key": "keys differ",
    "non-string-key": "keys differ",
    "weights-not-a-dict": "must be a dict",
    "other-groups": "claims groups",
    "groups-not-a-list": "claims groups",
    "undrawn-client": "not asked to train",
    "client-id-string": "not asked to train",
    "client-id-bool": "not asked to train",
    "nan-metric": "not a finite number",
    "inf-metric": "not a finite number",
    "string-metric": "not a finite number",
    "other-metric-names": "differ from",
    "metrics-not-a-dict": "metrics must be a dict",
    "duplicate": "2 replies for one client",
    "not-a-result": "must be a ClientResult",
    "undecodable": "unreadable reply",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_each_hostile_reply_is_rejected_and_changes_nothing(honest, kind):
    fed, weights, replies = honest
    tampered = [x for r in replies for x in (_tamper(kind, r) if r.client_id == VICTIM else [r])]
    outcome = run_round(fed, weights, 0, Replayed(tampered))
    assert [r.client_id for r in outcome.results] == [0, 2, 3]
    assert outcome.rejected and all(HOSTILE[kind] in x.reason for x in outcome.rejected), outcome.rejected
    assert {x.client_id for x in outcome.rejected} <= {VICTIM, None}
    assert len(outcome.rejected) == (2 if kind == "duplicate" else 1)
    without = aggregate(weights, [r for r in replies if r.client_id != VICTIM])
    assert outcome.weights.keys() == without.keys()
    assert all(torch.equal(outcome.weights[k], without[k]) for k in without)
    assert not outcome.failed


def test_a_non_contiguous_honest_reply_is_accepted_with_the_same_numbers(honest):
    fed, weights, replies = honest
    key = next(k for k in sorted(replies[VICTIM].weights) if replies[VICTIM].weights[k].dim() == 2)
    t = replies[VICTIM].weights[key]
    strided = t.t().contiguous().t()  # same values, transposed strides
    assert not strided.is_contiguous()
    odd = [dataclasses.replace(r, weights=r.weights | {key: strided}) if r.client_id == VICTIM else r for r in replies]
    outcome = run_round(fed, weights, 0, Replayed(odd))
    plain = run_round(fed, weights, 0, Replayed(replies))
    assert not outcome.rejected and all(torch.equal(outcome.weights[k], plain.weights[k]) for k in plain.weights)


def test_a_round_with_every_reply_rejected_is_failed_and_keeps_the_model(honest):
    fed, weights, replies = honest
    bad = [dataclasses.replace(r, num_samples=r.num_samples * 2) for r in replies]
    outcome = run_round(fed, weights, 0, Replayed(bad))
    assert outcome.failed and len(outcome.rejected) == 4 and not outcome.results
    assert all(torch.equal(outcome.weights[k], weights[k]) for k in weights)


def test_the_server_knows_every_partition_size(shared_data_dir):
    for cfg in (tiny_config(shared_data_dir), tiny_config(shared_data_dir, mode="centralized")):
        groups = load_groups(cfg)
        assert partition_sizes(cfg, groups) == [c.num_samples for c in build_clients(cfg, groups)]
    uneven = tiny_config(
        shared_data_dir, data={"groups": [{"name": "m", "dataset": "mnist", "clients": 3, "train_size": 100}]}
    )
    assert partition_sizes(uneven, load_groups(uneven)) == [34, 33, 33]


# --------------------------------------------------------------------------- robust rules by hand

GLOBAL = {
    "encoder.w": torch.tensor([0.0, 0.0]),
    "branches.0.w": torch.tensor([0.0]),
    "branches.1.w": torch.tensor([0.0]),
}


def _r(cid: int, group: int, n: int, enc: list[float], branch: float) -> ClientResult:
    return ClientResult(
        cid, [group], n, {"encoder.w": torch.tensor(enc), f"branches.{group}.w": torch.tensor([branch])}
    )


# five clients: three in group 0, two in group 1; client 4 is an attacker with huge values
ROUND = [
    _r(0, 0, 10, [1.0, 4.0], 1.0),
    _r(1, 0, 10, [2.0, 5.0], 2.0),
    _r(2, 0, 10, [3.0, -6.0], 9.0),
    _r(3, 1, 10, [4.0, 7.0], 3.0),
    _r(4, 1, 60, [1e6, 1e6], 1e6),
]


def test_coordinate_median_within_each_group():
    new = aggregate(GLOBAL, ROUND, AggregationRule("median"))
    # encoder over all five: sorted [1,2,3,4,1e6] -> 3; [-6,4,5,7,1e6] -> 5
    assert new["encoder.w"].tolist() == [3.0, 5.0]
    assert new["branches.0.w"].tolist() == [2.0]  # median of 1, 2, 9
    assert new["branches.1.w"].tolist() == [(3.0 + 1e6) / 2]  # two senders: the mean of the middle two


def test_trimmed_mean_drops_the_extremes_at_each_end():
    new = aggregate(GLOBAL, ROUND, AggregationRule("trimmed_mean", trim_fraction=0.2))
    # floor(0.2 * 5) = 1 dropped at each end: encoder [2,3,4] -> 3; [4,5,7] -> 16/3
    assert new["encoder.w"].tolist() == pytest.approx([3.0, 16.0 / 3.0])
    # group 0 has 3 senders: floor(0.6) = 0 dropped -> plain unweighted mean 4
    assert new["branches.0.w"].tolist() == [4.0]
    fedavg = aggregate(GLOBAL, ROUND)  # weighted: the attacker's 60 samples of 100 dominate
    assert fedavg["encoder.w"][0].item() == pytest.approx((1 + 2 + 3 + 4) * 0.1 + 1e6 * 0.6)


def test_robust_rules_take_the_lower_median_of_integer_buffers():
    g = {"bn.n": torch.tensor(0)}
    replies = [ClientResult(i, [0], 1, {"bn.n": torch.tensor(v)}) for i, v in enumerate([5, 1, 10**9, 3])]
    assert aggregate(g, replies, AggregationRule("median"))["bn.n"].item() == 3
    assert aggregate(g, replies, AggregationRule("trimmed_mean", 0.25))["bn.n"].item() == 3
    assert aggregate(g, replies)["bn.n"].item() == 10**9  # fedavg: the maximum, as before


def test_clip_bounds_each_update_norm_before_averaging():
    attacker = _r(4, 1, 10, [3e6, 4e6], 0.0)  # update norm 5e6
    honest = _r(3, 1, 10, [0.3, 0.4], 0.0)  # update norm 0.5
    assert update_norm(GLOBAL, attacker.weights) == pytest.approx(5e6)
    new = aggregate(GLOBAL, [honest, attacker], AggregationRule(clip_norm=1.0))
    # attacker scaled to norm 1: [0.6, 0.8]; honest kept; mean of the two
    assert new["encoder.w"].tolist() == pytest.approx([0.45, 0.6])
    assert update_norm(GLOBAL, new) <= 1.0 + 1e-9
    # measured bound: whatever the attacker sends, the global step is at most its share x clip
    for scale in (1.0, 1e3, 1e6, 1e30):
        big = _r(4, 1, 10, [scale, -scale], scale)
        step = update_norm(GLOBAL, aggregate(GLOBAL, [big], AggregationRule(clip_norm=0.5)))
        assert step == pytest.approx(0.5) and not math.isnan(step)
