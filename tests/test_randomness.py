"""Randomness lapses closed: no hidden global RNG in the distributions, evaluation restores the model's mode."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import REPO, tiny_config

from fissionvae.evaluation.elbo import mean_terms
from fissionvae.evaluation.nll import iw_nll
from fissionvae.models.distributions import DiagGaussian
from fissionvae.models.vae import build_model


def _model():
    return build_model(tiny_config(REPO / "unused-data", model={"hierarchical": True}))


def test_rsample_needs_a_generator():
    q = DiagGaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(TypeError):
        q.rsample()  # type: ignore[call-arg]
    a, b = q.rsample(torch.Generator().manual_seed(1)), q.rsample(torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_no_generator_means_the_global_cpu_generator_explicitly():
    model = _model().eval()
    torch.manual_seed(5)
    implicit = model.sample(0, 3)
    torch.manual_seed(5)
    explicit = model.sample(0, 3, torch.default_generator)
    assert torch.equal(implicit, explicit)


@pytest.mark.parametrize("training", [True, False])
def test_evaluation_restores_the_models_mode(training):
    model = _model().train(training)
    x = torch.rand(6, 1, 28, 28)
    gid = torch.tensor([0, 1] * 3)
    nll = iw_nll(model, x, 0, 3, torch.Generator().manual_seed(0))
    assert model.training is training and nll > 0
    mean_terms(model, x, gid, torch.Generator().manual_seed(0))
    assert model.training is training
