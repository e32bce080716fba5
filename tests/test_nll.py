import math

import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.evaluation.nll import iw_nll, nll_report, per_dim, pooled
from fissionvae.models.vae import build_model


def test_bits_per_dim_conversion():
    r = per_dim(784 * math.log(2), 784)
    assert r["nats_per_dim"] == pytest.approx(math.log(2)) and r["bits_per_dim"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "model", [{"hierarchical": False}, {"hierarchical": True}, {"hierarchical": True, "prior": "learnable"}]
)
def test_iw_bound_is_tighter_than_the_elbo_and_k1_matches_elbo(tmp_path, model):
    m = build_model(tiny_config(tmp_path, model=model)).eval()
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    report = nll_report(m, x, 1, 50, torch.Generator().manual_seed(0))
    assert report["iw"]["nats_per_image"] <= report["neg_elbo"]["nats_per_image"]
    if not model["hierarchical"]:
        # K = 1 is an unbiased estimate of the negative ELBO: compare two large-sample means
        k1 = iw_nll(m, x.repeat(40, 1, 1, 1), 1, 1, torch.Generator().manual_seed(1))
        assert k1 == pytest.approx(report["neg_elbo"]["nats_per_image"], rel=0.01)


def test_pooled_weights_by_images():
    a = {"images": 1, "neg_elbo": per_dim(10.0, 10), "iw": per_dim(8.0, 10) | {"k": 5}}
    b = {"images": 3, "neg_elbo": per_dim(20.0, 10), "iw": per_dim(16.0, 10) | {"k": 5}}
    p = pooled([a, b])
    assert (
        p["images"] == 4
        and p["neg_elbo"]["nats_per_image"] == pytest.approx(17.5)
        and p["iw"]["nats_per_dim"] == pytest.approx(1.4)
    )
