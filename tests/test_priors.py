import math

import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.config import ConfigError
from fissionvae.models.priors import prior_means


def test_identical_is_zero():
    for k in (2, 5):
        assert torch.equal(prior_means("identical", k, 16), torch.zeros(k, 16))


def test_one_hot_two_and_five_groups():
    assert prior_means("one-hot", 2, 4).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    m = prior_means("one-hot", 5, 6)
    assert torch.equal(m[:, :5], torch.eye(5)) and m[:, 5].abs().sum() == 0


def test_symmetrical_two_and_five_groups():
    assert prior_means("symmetrical", 2, 3).tolist() == [[1, 1, 1], [-1, -1, -1]]
    m = prior_means("symmetrical", 5, 2)
    assert m[:, 0].tolist() == [1, -1, 2, -2, 3] and torch.equal(m[:, 0], m[:, 1])


def test_random_is_seeded_standard_normal():
    a, b, c = (
        prior_means("random", 5, 16, seed=1),
        prior_means("random", 5, 16, seed=1),
        prior_means("random", 5, 16, seed=2),
    )
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, torch.randn(5, 16, generator=torch.Generator().manual_seed(1)))
    big = prior_means("random", 100, 100, seed=0)
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05


def test_wave_two_groups_sixteen_dims():
    m = prior_means("wave", 2, 16)
    assert m[0].tolist() == [1.0] * 8 + [0.0] * 8
    assert m[1].tolist() == [0.0] * 8 + [1.0] * 8


def test_wave_five_groups_leaves_remainder_zero():
    m = prior_means("wave", 5, 16)  # width floor(16/5) = 3
    for j in range(5):
        expected = torch.zeros(16)
        expected[3 * j : 3 * j + 3] = 1
        assert torch.equal(m[j], expected)
    assert m[:, 15].sum() == 0 and m.sum() == 15


def test_wave_and_one_hot_need_enough_dims():
    with pytest.raises(ValueError, match="latent dim >= number of groups"):
        prior_means("wave", 5, 4)
    with pytest.raises(ValueError, match="latent dim >= number of groups"):
        prior_means("one-hot", 3, 2)


def test_config_rejects_wave_with_too_few_dims(tmp_path):
    with pytest.raises(ConfigError, match="model.prior: 'wave' needs model.latent_dim >= number of groups"):
        tiny_config(tmp_path, model={"latent_dim": 1})


def test_learnable_has_no_fixed_prior_and_needs_hierarchy(tmp_path):
    assert prior_means("learnable", 2, 8) is None
    with pytest.raises(ConfigError, match="learnable"):
        tiny_config(tmp_path, model={"prior": "learnable", "hierarchical": False})
    assert not math.isnan(prior_means("symmetrical", 4, 1).sum())
