import numpy as np
import torch
from tests.helpers import tiny_config

from fissionvae.data.federated import GroupData, build_clients, iid_partition, seeded_subset
from fissionvae.federation.sampling import sample_participants


def test_iid_partition_disjoint_complete_even_and_seeded():
    shards = iid_partition(1003, 10, seed=5)
    flat = np.concatenate(shards)
    assert sorted(flat.tolist()) == list(range(1003))  # complete and disjoint
    assert {len(s) for s in shards} == {100, 101}
    again = iid_partition(1003, 10, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    assert not np.array_equal(shards[0], iid_partition(1003, 10, seed=6)[0])
    assert not np.array_equal(shards[0], iid_partition(1003, 10, seed=5, group_index=1)[0])


def test_seeded_subset():
    a = seeded_subset(1000, 100, seed=1, stream_key=0)
    assert len(set(a.tolist())) == 100 and np.array_equal(a, np.sort(a))
    assert np.array_equal(a, seeded_subset(1000, 100, seed=1, stream_key=0))
    assert np.array_equal(seeded_subset(10, None, 0, 0), np.arange(10))


def test_participation_is_a_function_of_seed_and_round():
    assert sample_participants(0, 3, 20, 0.5) == sample_participants(0, 3, 20, 0.5)
    assert sample_participants(0, 3, 20, 0.5) != sample_participants(0, 4, 20, 0.5)
    assert sample_participants(0, 0, 7, 1.0) == list(range(7))
    rate = np.mean([len(sample_participants(1, r, 20, 0.25)) / 20 for r in range(400)])
    assert abs(rate - 0.25) < 0.02
    assert any(not sample_participants(2, r, 2, 0.05) for r in range(50))  # empty rounds happen


def fake_groups():
    def g(name, n, value):
        return GroupData(
            name,
            "mnist",
            torch.full((n, 1, 28, 28), value),
            torch.arange(n) % 10,
            torch.zeros(5, 1, 28, 28),
            torch.zeros(5, dtype=torch.int64),
        )

    return [g("mnist", 400, 0.1), g("fashion", 400, 0.9)]


def test_build_clients_federated_and_centralized(tmp_path):
    cfg = tiny_config(tmp_path)
    clients = build_clients(cfg, fake_groups())
    assert [c.groups for c in clients] == [[0], [0], [1], [1]]
    assert [c.num_samples for c in clients] == [200] * 4
    assert all((c.images == (0.1 if c.groups == [0] else 0.9)).all() for c in clients)
    central = build_clients(tiny_config(tmp_path, mode="centralized"), fake_groups())
    assert len(central) == 1 and central[0].num_samples == 800 and central[0].groups == [0, 1]
