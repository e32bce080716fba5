"""One shared suite that every model variant of Table 1 passes."""

import pytest
import torch
from tests.helpers import tiny_config

from fissionvae.config import DecoderConfig
from fissionvae.models.distributions import DiagGaussian, unit_gaussian_log_prob
from fissionvae.models.vae import build_model


def make(tmp_path, **model):
    return build_model(tiny_config(tmp_path, model=model))


def batch(n=12):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.tensor([0, 1] * (n // 2))


def test_kl_to_unit_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    q = DiagGaussian(torch.tensor([[0.3, -1.0, 2.0]]), torch.tensor([[-0.5, 0.2, 0.0]]))
    prior_mean = torch.tensor([1.0, 0.0, 1.0])
    z = DiagGaussian(q.mean.expand(400_000, 3), q.logvar.expand(400_000, 3)).rsample(g)
    mc = (q.log_prob(z) - unit_gaussian_log_prob(z, prior_mean)).mean()
    assert torch.isclose(q.kl_to_unit(prior_mean)[0], mc, atol=0.01)


def test_general_kl_matches_monte_carlo_and_unit_case():
    g = torch.Generator().manual_seed(1)
    q = DiagGaussian(torch.tensor([[0.5, -0.2]]), torch.tensor([[-1.0, 0.3]]))
    p = DiagGaussian(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.4, -0.6]]))
    z = DiagGaussian(q.mean.expand(400_000, 2), q.logvar.expand(400_000, 2)).rsample(g)
    mc = (q.log_prob(z) - DiagGaussian(p.mean.expand_as(z), p.logvar.expand_as(z)).log_prob(z)).mean()
    assert torch.isclose(q.kl(p)[0], mc, atol=0.01)
    unit = DiagGaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    assert torch.isclose(q.kl(unit), q.kl_to_unit()).all()


def test_terms_compose_the_paper_losses(tmp_path):
    x, gid = batch()
    flat = make(tmp_path, prior="wave", decoder_branches=True).terms(x, gid, torch.Generator().manual_seed(0))
    assert torch.allclose(flat["loss"], flat["recon"] + flat["kl_prior"])
    h = make(tmp_path, prior="wave", decoder_branches=True, hierarchical=True).terms(
        x, gid, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(h["neg_elbo"], h["recon"] + h["kl_z2"] + h["kl_z1"])  # Eq. 9
    assert torch.allclose(h["loss"], h["neg_elbo"] + h["recon_z2"] + h["kl_prior"])  # Eq. 10
    lrn = make(tmp_path, prior="learnable", decoder_branches=True, hierarchical=True).terms(
        x, gid, torch.Generator().manual_seed(0)
    )
    assert "kl_prior" not in lrn and torch.allclose(lrn["loss"], lrn["neg_elbo"] + lrn["recon_z2"])


def test_kl_prior_uses_each_images_group_prior(tmp_path):
    model = make(tmp_path, prior="wave", decoder_branches=True)
    x, _ = batch(4)
    q = model.encode(x)
    for g in (0, 1):
        t = model.terms(x, torch.full((4,), g), torch.Generator().manual_seed(0))
        assert torch.allclose(t["kl_prior"], q.kl_to_unit(model.prior_means[g]))


def test_mixed_batch_routes_each_image_to_its_branch(tmp_path):
    model = make(tmp_path, prior="wave", decoder_branches=True)
    x, gid = batch()
    mixed = model.reconstruct(x, gid)
    for g in (0, 1):
        sel = gid == g
        assert torch.allclose(mixed[sel], model.reconstruct(x[sel], gid[sel]))
    assert not torch.allclose(model.reconstruct(x, torch.zeros_like(gid)), model.reconstruct(x, torch.ones_like(gid)))


def test_ownership_encoder_plus_own_branch(tmp_path):
    branched = make(tmp_path, prior="wave", decoder_branches=True, hierarchical=True)
    keys0 = branched.owned_keys([0])
    assert any(k.startswith("encoder.z1.") for k in keys0) and any(k.startswith("branches.0.z1.") for k in keys0)
    assert not any(k.startswith("branches.1.") for k in keys0) and "prior_means" not in keys0
    shared = make(tmp_path, prior="wave", decoder_branches=False)
    assert shared.owned_keys([0]) == shared.owned_keys([1]) and len(shared.branches) == 1


def test_heterogeneous_branches_have_their_own_shapes(tmp_path):
    cfg = tiny_config(tmp_path, model={"hierarchical": True})
    cfg.data.groups[1].decoder = DecoderConfig(kind="conv", hidden=[16, 8], latent_hidden=[16, 16, 16])
    model = build_model(cfg)
    assert isinstance(model.branches[1].x.deconv, torch.nn.Sequential)
    assert len(model.branches[1].z1.body) > len(model.branches[0].z1.body)
    s = model.sample("fashion", 3)
    assert s.shape == (3, 1, 28, 28)


def test_prior_swap_decodes_other_groups_prior(tmp_path):
    model = make(tmp_path, prior="wave", decoder_branches=True, hierarchical=True)
    a = model.sample(0, 4, torch.Generator().manual_seed(0), "z1-z2-z1")
    b = model.sample(0, 4, torch.Generator().manual_seed(0), "z1-z2-z1", prior_group=1)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="unknown group"):
        model.sample("cats", 1)


def test_dugdale_conv_architecture_and_parameter_count(tmp_path):
    cfg = tiny_config(
        tmp_path,
        model={
            "prior": "identical",
            "decoder_branches": False,
            "latent_dim": 200,
            "encoder_kind": "conv",
            "encoder_hidden": [16, 32],
            "norm": "batch",
            "decoder": {"kind": "conv-mirror", "hidden": [32, 16]},
        },
        data={"groups": [{"name": "mnist", "dataset": "mnist", "clients": 4}]},
    )
    model = build_model(cfg)
    assert 10.5e6 < sum(p.numel() for p in model.parameters()) < 11.5e6  # "~11M parameters"
    assert model.encoder["x"].head.in_features == 32 * 24 * 24
    assert any(k.endswith("num_batches_tracked") for k in model.owned_keys([0]))
    x, _ = batch(8)
    terms = model.terms(x, torch.zeros(8, dtype=torch.long), torch.Generator().manual_seed(0))
    terms["loss"].mean().backward()
    assert model.sample(0, 3).shape == (3, 1, 28, 28)


def test_kl_weight_scales_kl_in_the_loss_only(tmp_path):
    x, gid = batch()
    t1 = make(tmp_path, prior="wave", decoder_branches=True).terms(x, gid, torch.Generator().manual_seed(0))
    t5 = make(tmp_path, prior="wave", decoder_branches=True, kl_weight=5.0).terms(
        x, gid, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(t5["loss"], t5["recon"] + 5 * t5["kl_prior"]) and torch.allclose(
        t5["neg_elbo"], t1["neg_elbo"]
    )
