"""Group-aware FedAvg (Eq. 1): exact numbers on tiny federations."""

import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.federation.aggregation import aggregate, weighted_average
from fissionvae.federation.client import ClientResult
from fissionvae.federation.replies import InvalidUpdate, check_update
from fissionvae.models.vae import build_model


def reply(cid, group, n, **weights):
    return ClientResult(cid, [group], n, {k: torch.tensor(v, dtype=torch.float32) for k, v in weights.items()})


GLOBAL = {
    "encoder.w": torch.tensor([0.0, 0.0]),
    "branches.0.w": torch.tensor([10.0]),
    "branches.1.w": torch.tensor([20.0, 20.0, 20.0]),  # another shape: heterogeneous branch
    "prior_means": torch.tensor([7.0]),
}


def test_encoder_over_all_branch_within_group_weighted_by_samples():
    results = [
        reply(0, 0, 100, **{"encoder.w": [1.0, 2.0], "branches.0.w": [1.0]}),
        reply(1, 0, 300, **{"encoder.w": [5.0, 6.0], "branches.0.w": [5.0]}),
        reply(2, 1, 600, **{"encoder.w": [10.0, 0.0], "branches.1.w": [3.0, 6.0, 9.0]}),
    ]
    new = aggregate(GLOBAL, results)
    # encoder: (100*[1,2] + 300*[5,6] + 600*[10,0]) / 1000
    assert torch.allclose(new["encoder.w"], torch.tensor([7.6, 2.0]))
    # branch 0 only over group 0's replies: (100*1 + 300*5) / 400
    assert torch.allclose(new["branches.0.w"], torch.tensor([4.0]))
    # branch 1 only over group 1's single reply
    assert torch.equal(new["branches.1.w"], torch.tensor([3.0, 6.0, 9.0]))
    assert torch.equal(new["prior_means"], GLOBAL["prior_means"])  # never sent, never changed


def test_absent_group_keeps_its_branch_and_result_order_does_not_matter():
    results = [
        reply(3, 0, 50, **{"encoder.w": [2.0, 2.0], "branches.0.w": [0.0]}),
        reply(1, 0, 150, **{"encoder.w": [6.0, 2.0], "branches.0.w": [4.0]}),
    ]
    a, b = aggregate(GLOBAL, results), aggregate(GLOBAL, results[::-1])
    assert torch.equal(a["branches.1.w"], GLOBAL["branches.1.w"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.allclose(a["encoder.w"], torch.tensor([5.0, 2.0]))


def test_no_replies_changes_nothing():
    new = aggregate(GLOBAL, [])
    assert all(torch.equal(new[k], GLOBAL[k]) for k in GLOBAL)


def test_integer_buffers_take_max():
    like = torch.tensor(0, dtype=torch.int64)
    assert weighted_average([torch.tensor(3), torch.tensor(9)], [1, 1], like).item() == 9


def test_real_model_branches_aggregate_within_group(tmp_path):
    model = build_model(tiny_config(tmp_path, model={"hierarchical": True}))
    glob = model.state_dict()
    results = []
    for cid, (g, n, value) in enumerate([(0, 10, 1.0), (0, 30, 3.0), (1, 20, -1.0)]):
        owned = model.owned_keys([g])
        results.append(ClientResult(cid, [g], n, {k: torch.full_like(glob[k], value) for k in owned}))
    new = aggregate(glob, results)
    for k, v in new.items():
        if k.startswith("encoder."):
            assert torch.allclose(v, torch.full_like(v, (10 * 1 + 30 * 3 - 20) / 60))
        elif k.startswith("branches.0."):
            assert torch.allclose(v, torch.full_like(v, 2.5))
        elif k.startswith("branches.1."):
            assert torch.allclose(v, torch.full_like(v, -1.0))
        else:
            assert torch.equal(v, glob[k])


@pytest.mark.parametrize(
    "weights,match",
    [
        ({"encoder.w": [1.0, 1.0], "branches.1.w": [1.0, 1.0, 1.0]}, "keys differ"),
        ({"encoder.w": [1.0, 1.0, 1.0], "branches.0.w": [1.0]}, "expected \\(2,\\)"),
        ({"encoder.w": [float("nan"), 1.0], "branches.0.w": [1.0]}, "non-finite"),
    ],
)
def test_check_update_rejects_bad_replies(weights, match):
    with pytest.raises(InvalidUpdate, match=match):
        check_update(GLOBAL, ["encoder.w", "branches.0.w"], reply(0, 0, 10, **weights), 10)


def test_check_update_rejects_wrong_dtype_and_sample_count():
    good = {"encoder.w": torch.zeros(2), "branches.0.w": torch.zeros(1)}
    with pytest.raises(InvalidUpdate, match="float64"):
        check_update(
            GLOBAL, list(good), ClientResult(0, [0], 5, good | {"encoder.w": torch.zeros(2, dtype=torch.float64)}), 5
        )
    with pytest.raises(InvalidUpdate, match="sample count must be a positive int"):
        check_update(GLOBAL, list(good), ClientResult(0, [0], 0, good), None)
