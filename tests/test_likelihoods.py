"""Pixel likelihoods: normalisation over the 256 values, edge bins, bits/dim on constructed cases, sampling."""

import math

import pytest
import torch
from torch import Tensor

from fissionvae.evaluation.nll import per_dim
from fissionvae.models.likelihoods import (
    BIN,
    CALIBRATION_MOMENTUM,
    GAUSSIAN_STD_LR,
    Bernoulli,
    DiscretisedLogisticMixture,
    Gaussian,
    PixelScale,
    build_likelihood,
)

VALUES = torch.arange(256, dtype=torch.float64) / 255  # the 8-bit grid in [0, 1]


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def phi(v: float) -> float:
    return 0.5 * math.erfc(-v / math.sqrt(2.0))


def grey_probs(lik, params: torch.Tensor) -> torch.Tensor:
    """P(x) of every 8-bit value of one grey pixel with decoder output ``params`` (1, P, 1, 1)."""
    return torch.exp(-lik.nll(params.expand(256, -1, -1, -1), VALUES.view(256, 1, 1, 1)))


@pytest.mark.parametrize("seed", range(4))
def test_dlml_grey_probabilities_sum_to_one(seed):
    g = torch.Generator().manual_seed(seed)
    lik = DiscretisedLogisticMixture(channels=1, components=3)
    params = torch.randn(1, lik.out_channels, 1, 1, generator=g, dtype=torch.float64) * 2
    assert lik.out_channels == 9
    assert grey_probs(lik, params).sum().item() == pytest.approx(1.0, abs=1e-9)


def test_dlml_coupled_two_channel_probabilities_sum_to_one_over_all_256_squared_values():
    g = torch.Generator().manual_seed(7)
    lik = DiscretisedLogisticMixture(channels=2, components=3)
    assert lik.out_channels == 3 * (1 + 2 + 2 + 1)  # K logits, 2K means, 2K log-scales, K coefficients
    params = torch.randn(1, lik.out_channels, 1, 1, generator=g, dtype=torch.float64)
    params[0, 15:18, 0, 0] = torch.tensor([1.5, -2.0, 0.8])  # strong coupling of channel 2 to channel 1
    grid = torch.stack(torch.meshgrid(VALUES, VALUES, indexing="ij")).reshape(2, -1).T.reshape(-1, 2, 1, 1)
    total = torch.exp(-lik.nll(params.expand(len(grid), -1, -1, -1), grid)).sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


def test_dlml_edge_bins_and_channel_coupling_match_the_closed_form():
    lik = DiscretisedLogisticMixture(channels=3, components=1)
    mu, log_s, coeff = [0.2, -0.9, 0.95], [math.log(0.05), math.log(0.2), math.log(0.02)], [0.7, -0.4, 0.3]
    params = torch.tensor([0.0, *mu, *log_s, *[math.atanh(c) for c in coeff]], dtype=torch.float64).view(1, 10, 1, 1)
    s = [math.exp(v) for v in log_s]

    def p_bin(x: float, m: float, sc: float) -> float:  # x on the [-1, 1] grid
        hi = 1.0 if x > 0.999 else sigmoid((x + BIN - m) / sc)
        lo = 0.0 if x < -0.999 else sigmoid((x - BIN - m) / sc)
        return hi - lo

    for r, gr, b in [(0, 0, 0), (255, 255, 255), (0, 255, 128), (200, 17, 255), (128, 0, 1)]:
        x = [v / 127.5 - 1.0 for v in (r, gr, b)]
        # G's mean moves with the observed red value, B's with red and green (PixelCNN++ coupling)
        mu_g, mu_b = mu[1] + coeff[0] * x[0], mu[2] + coeff[1] * x[0] + coeff[2] * x[1]
        expected = p_bin(x[0], mu[0], s[0]) * p_bin(x[1], mu_g, s[1]) * p_bin(x[2], mu_b, s[2])
        got = math.exp(-lik.nll(params, torch.tensor([r, gr, b], dtype=torch.float64).view(1, 3, 1, 1) / 255).item())
        assert got == pytest.approx(expected, rel=1e-9)
    # the first bin is the whole lower tail, the last the whole upper tail
    grey = DiscretisedLogisticMixture(channels=1, components=1)
    probs = grey_probs(grey, torch.tensor([0.0, 0.1, math.log(0.3)], dtype=torch.float64).view(1, 3, 1, 1))
    assert probs[0].item() == pytest.approx(sigmoid((-1 + BIN - 0.1) / 0.3), rel=1e-12)
    assert probs[255].item() == pytest.approx(1 - sigmoid((1 - BIN - 0.1) / 0.3), rel=1e-12)


@pytest.mark.parametrize("mean,std", [(0.3, 0.1), (-0.99, 0.01), (1.5, 0.3), (0.0, 1e-3), (0.2, 7.0)])
def test_gaussian_probabilities_sum_to_one_with_open_edge_bins(mean, std):
    lik = Gaussian(1).double()
    lik.log_std.data.fill_(math.log(std))
    probs = grey_probs(lik, torch.tensor(mean, dtype=torch.float64).view(1, 1, 1, 1))
    assert torch.isfinite(probs).all() and probs.sum().item() == pytest.approx(1.0, abs=1e-9)
    assert probs[0].item() == pytest.approx(phi((-1 + BIN - mean) / std), rel=1e-6, abs=1e-300)
    assert probs[255].item() == pytest.approx(phi((mean - 1 + BIN) / std), rel=1e-6, abs=1e-300)


def test_bits_per_dim_on_constructed_images():
    """Every pixel of a 3x32x32 image at value 128, the decoder's mean exactly there."""
    x = torch.full((1, 3, 32, 32), 128 / 255)
    dims = 3 * 32 * 32
    gauss = Gaussian(3)
    gauss.log_std.data.fill_(math.log(0.1))
    nats = gauss.nll(x * 2 - 1, x).item()
    p = math.erf(BIN / 0.1 / math.sqrt(2))  # P(bin) = Phi(h/s) - Phi(-h/s)
    assert nats == pytest.approx(-dims * math.log(p), rel=1e-4)
    assert per_dim(nats, dims)["bits_per_dim"] == pytest.approx(-math.log2(p), rel=1e-4)
    assert per_dim(nats, dims)["bits_per_dim"] == pytest.approx(4.9983, abs=1e-3)  # pinned
    # DLML with K = 2 identical components at the pixel value, scale 0.05: P = tanh(h / (2 s))
    dlml = DiscretisedLogisticMixture(3, 2)
    params = torch.zeros(1, dlml.out_channels, 32, 32)
    params[:, 2:8] = 128 / 127.5 - 1  # means
    params[:, 8:14] = math.log(0.05)  # log-scales (coefficients 0: no coupling)
    nats = dlml.nll(params, x).item()
    assert per_dim(nats, dims)["bits_per_dim"] == pytest.approx(-math.log2(math.tanh(BIN / 0.1)), rel=1e-4)
    assert per_dim(nats, dims)["bits_per_dim"] == pytest.approx(4.6732, abs=1e-3)  # pinned


@pytest.mark.parametrize("seed", range(3))
def test_likelihoods_give_finite_gradients_at_the_edges_and_far_tails(seed):
    torch.manual_seed(seed)
    x = torch.rand(2, 3, 4, 4).mul(255).round().div(255)
    x[0] = 0.0
    x[1, 0] = 1.0
    for lik in (Gaussian(3), DiscretisedLogisticMixture(3, 4), Bernoulli(3)):
        params = (torch.randn(2, lik.out_channels, 4, 4) * 40).requires_grad_()  # log-scales up to ~e^120
        loss = lik.nll(params, x).sum()
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(params.grad).all(), type(lik).__name__


def test_mean_and_sample_are_images_and_agree():
    g = torch.Generator().manual_seed(0)
    gauss = Gaussian(3)
    gauss.log_std.data.fill_(math.log(0.1))
    mean = torch.full((20_000, 3, 1, 1), 0.2)
    s = gauss.sample(mean, g)
    assert s.min() >= 0 and s.max() <= 1
    assert s.mean().item() == pytest.approx(0.6, abs=2e-3) and s.std().item() == pytest.approx(0.05, abs=2e-3)
    assert torch.allclose(gauss.mean(mean[:1]), torch.full((1, 3, 1, 1), 0.6))
    dlml = DiscretisedLogisticMixture(3, 2)
    params = torch.randn(1, dlml.out_channels, 1, 1, generator=g) * 0.3
    params[:, 8:14] = -4.0  # small scales: the edge bins hardly clip
    draws = dlml.sample(params.expand(40_000, -1, -1, -1), g)
    assert ((draws * 255) - (draws * 255).round()).abs().max() < 1e-4  # on the 8-bit grid
    assert torch.allclose(draws.mean(0), dlml.mean(params)[0], atol=4e-3)


def test_registry_and_output_channels():
    assert build_likelihood("bernoulli", 3).out_channels == 3
    assert build_likelihood("gaussian", 3).out_channels == 3
    assert build_likelihood("dlml", 3, components=5).out_channels == 50
    assert build_likelihood("dlml", 1, components=5).out_channels == 15
    with pytest.raises(ValueError, match="unknown likelihood"):
        build_likelihood("poisson", 3)


def grey_mixture(
    weights: list[float], means: list[float], log_scale: float
) -> tuple[DiscretisedLogisticMixture, Tensor]:
    """A one-channel K-component DLML and its decoder output for one pixel (1, 3K, 1, 1)."""
    k = len(weights)
    dlml = DiscretisedLogisticMixture(1, k)
    params = torch.tensor([*map(math.log, weights), *means, *[log_scale] * k], dtype=torch.float64)
    return dlml, params.view(1, 3 * k, 1, 1)


def test_dlml_generation_draws_the_mixture_not_its_mean():
    """Two separated components, weights 0.3 / 0.7: generated pixels fall in each mode with its weight,
    with the logistic's spread, and none near the (blurred) mixture mean between them."""
    dlml, params = grey_mixture([0.3, 0.7], [-0.6, 0.5], math.log(0.02))
    g = torch.Generator().manual_seed(0)
    draws = dlml.draw(params.expand(40_000, -1, -1, -1), "generation", g).flatten() * 2 - 1  # [-1, 1] scale
    mean = dlml.draw(params, "mean").item() * 2 - 1
    assert mean == pytest.approx(0.3 * -0.6 + 0.7 * 0.5, abs=1e-6)
    assert ((draws - mean).abs() < 0.15).double().mean().item() < 1e-3  # almost no generated pixel near the mean
    low = draws < 0
    assert low.double().mean().item() == pytest.approx(0.3, abs=0.01)  # binomial sd 0.0023
    assert draws[low].mean().item() == pytest.approx(-0.6, abs=2e-3)
    assert draws[~low].mean().item() == pytest.approx(0.5, abs=2e-3)
    logistic_sd = 0.02 * math.pi / math.sqrt(3)  # plus the 8-bit rounding, sd (2/255)/sqrt(12)
    assert draws[~low].std().item() == pytest.approx(math.hypot(logistic_sd, BIN * 2 / math.sqrt(12)), rel=0.03)
    # its samples are scored by the same model: the empirical frequency of a value matches P(value)
    value = torch.round((torch.tensor(0.5) + 1) * 127.5) / 255
    p = torch.exp(-dlml.nll(params, value.view(1, 1, 1, 1).double())).item()
    hits = ((draws + 1) * 127.5).round() == round(value.item() * 255)
    assert hits.double().mean().item() == pytest.approx(p, abs=0.01)


def test_dlml_samples_follow_the_channel_coupling():
    """One component, coupling coefficient c1 = tanh(0.5) of green on red: green - c1 * red has the
    green mean and does not depend on red; without coupling the two channels are independent."""
    dlml = DiscretisedLogisticMixture(3, 1)
    params = torch.zeros(1, dlml.out_channels, 1, 1)  # [logit, 3 means, 3 log-scales, 3 coefficients]
    params[0, 1:4, 0, 0] = torch.tensor([0.0, -0.2, 0.1])
    params[0, 4:7] = math.log(0.1)
    params[0, 7] = 0.5
    g = torch.Generator().manual_seed(1)
    x = dlml.sample(params.expand(40_000, -1, -1, -1), g).flatten(1) * 2 - 1  # (N, 3) on [-1, 1]
    r, gr = x[:, 0], x[:, 1]
    slope = ((r - r.mean()) * (gr - gr.mean())).mean() / r.var()
    assert slope.item() == pytest.approx(math.tanh(0.5), abs=0.02)
    assert (gr - math.tanh(0.5) * r).mean().item() == pytest.approx(-0.2, abs=3e-3)
    assert torch.corrcoef(torch.stack([r, x[:, 2]]))[0, 1].abs().item() < 0.02  # blue: coefficients 0


def test_draw_names_the_pixels_and_needs_a_generator_for_samples():
    dlml, params = grey_mixture([0.5, 0.5], [-0.5, 0.5], -3.0)
    assert DiscretisedLogisticMixture.generation == "sample" and Gaussian.generation == "mean"
    assert torch.equal(dlml.draw(params, "mean"), dlml.mean(params))
    with pytest.raises(ValueError, match="seeded generator"):
        dlml.draw(params, "generation")
    with pytest.raises(ValueError, match="pixels must be"):
        dlml.draw(params, "median")


def test_calibrated_std_is_the_closed_form_optimum_of_the_batch():
    """sigma-VAE: the batch's std is sqrt(MSE); it minimises the batch NLL; evaluation uses the running estimate."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), generator=g).double() / 255
    mean = x * 2 - 1 + 0.15 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    scale = PixelScale("calibrated").double()
    lik = Gaussian(3, scale)
    assert [n for n, _ in scale.named_parameters()] == [] and [n for n, _ in scale.named_buffers()] == ["log_std"]
    mse = ((x * 2 - 1) - mean).pow(2).mean().item()
    before = scale.log_std.item()
    scale.train()
    nll = lik.nll(mean, x).sum().item()  # scored at the closed form; the running estimate takes one step
    after_one = before + CALIBRATION_MOMENTUM * (0.5 * math.log(mse) - before)
    assert scale.log_std.item() == pytest.approx(after_one, rel=1e-12)

    def fixed_nll(std: float) -> float:
        fixed = PixelScale("learned").double()
        fixed.log_std.data.fill_(math.log(std))  # in float64 (the constructor's tensor is float32)
        return Gaussian(3, fixed).nll(mean, x).sum().item()

    assert nll == pytest.approx(fixed_nll(math.sqrt(mse)), rel=1e-12)
    assert fixed_nll(math.sqrt(mse) * 0.9) > nll and fixed_nll(math.sqrt(mse) * 1.1) > nll  # it is the optimum
    scale.eval()  # evaluation scores with the running estimate, and does not move it
    assert lik.nll(mean, x).sum().item() == pytest.approx(fixed_nll(math.exp(after_one)), rel=1e-12)
    assert scale.log_std.item() == pytest.approx(after_one, rel=1e-12)


def test_learned_std_reaches_the_optimum_within_a_few_hundred_steps():
    """From the initial std 0.5, Adam at GAUSSIAN_STD_LR reaches the pixels' rms error (0.1) in 300 steps;
    at a model lr of 1e-3 it would still be near 0.37."""
    g = torch.Generator().manual_seed(0)
    stds = {}
    for lr in (GAUSSIAN_STD_LR, 1e-3):
        lik = Gaussian(1)  # built alone: it owns its PixelScale("learned")
        opt = torch.optim.Adam(lik.parameters(), lr=lr)
        for _ in range(300):
            x = ((torch.randn(32, 1, 8, 8, generator=g) * 0.1).clamp(-1, 1) + 1) / 2
            loss = lik.nll(torch.zeros(32, 1, 8, 8), (x * 255).round() / 255).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        stds[lr] = lik.log_std.exp().item()
    assert stds[GAUSSIAN_STD_LR] == pytest.approx(0.1, rel=0.1)
    assert stds[1e-3] == pytest.approx(0.5 * math.exp(-0.3), rel=0.02)
