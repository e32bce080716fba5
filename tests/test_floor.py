"""The floor model's NLL on constructed cases, computed by hand."""

import math

import pytest
import torch

from fissionvae.evaluation.floor import FloorModel


def test_bernoulli_floor_nll_by_hand():
    # 3 training images of one 1x1x2 image: pixel 0 is on in 2 of 3, pixel 1 never
    train = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]], [[[0.0, 0.0]]]])
    floor = FloorModel.fit(train)
    p0, p1 = 2.5 / 4, 0.5 / 4  # (sum + 1/2) / (N + 1)
    assert torch.allclose(floor.mean.flatten(), torch.tensor([p0, p1], dtype=torch.float64))
    test = torch.tensor([[[[1.0, 1.0]]]])
    assert floor.nll(test).item() == pytest.approx(-math.log(p0) - math.log(p1), rel=1e-12)
    assert floor.sample(3, torch.Generator().manual_seed(0)).shape == (3, 1, 1, 2)


def test_gaussian_floor_nll_is_a_normalised_code_length():
    # per-pixel N(mean, std) on the 256-bin grid: the probabilities of all 256 values sum to one
    train = torch.rand(50, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    floor = FloorModel.fit(train, "gaussian")
    values = torch.arange(256, dtype=torch.float64).reshape(256, 1, 1, 1) / 255
    total = torch.exp(-floor.nll(values)).sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)
    samples = floor.sample(2000, torch.Generator().manual_seed(2))
    assert samples.mean().item() == pytest.approx(train.mean().item(), abs=0.02)


def test_floor_refuses_unknown_kind():
    with pytest.raises(ValueError, match="floor kind"):
        FloorModel.fit(torch.zeros(2, 1, 2, 2), "poisson")
