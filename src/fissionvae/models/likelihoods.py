"""Pixel likelihoods p(x | decoder output), pluggable by name.

A likelihood turns the decoder's raw output (``out_channels`` channels for an image of
``channels`` channels) into per-image negative log-likelihoods in nats, a mean image and a
sampled image. It is an ``nn.Module`` living inside its decoder branch, so a likelihood with
parameters (the Gaussian's shared learned variance) is trained and aggregated with that branch
(``branches.<g>.likelihood.*``: averaged over group g's participants only).

=========== ====================================================== ============ ==================
name        model                                                  NLL is       generation draws
=========== ====================================================== ============ ==================
bernoulli   per-pixel Bernoulli on [0, 1] intensities (BCE)        BCE, nats    the mean
gaussian    discretised Gaussian, one std shared by the whole      -log P(x)    the mean
            model (:class:`PixelScale`)
dlml        discretised logistic mixture (PixelCNN++), K comps     -log P(x)    a mixture sample
=========== ====================================================== ============ ==================

``gaussian`` and ``dlml`` give the probability of the 8-bit image itself: each of the 256 values
of a channel is a bin of width 2/255 on the [-1, 1] scale, the two edge bins extend to -inf and
+inf, so the probabilities of all 256 values sum to one and nats/image, divided by C*H*W and
ln 2, is bits/dim comparable with the literature. For the Gaussian with a std much wider than a
bin (always the case in practice), -log P(x) equals the continuous Gaussian NLL of the paper plus
the constant D*log(bin width): the same gradients. ``bernoulli`` treats grey levels as soft
targets (the paper's BCE), so its "bits/dim" is BCE-based, not a probability of the image.

The Gaussian's std is the paper's "shared global variance across all images": one
:class:`PixelScale` per model, outside the decoder branches, so the engine averages it over
every participant like the shared encoder. ``learned`` (default) trains its log-std with its own
Adam learning rate; ``calibrated`` is the sigma-VAE (Rybkin et al. 2021): the std is set in closed
form from each batch's mean squared error, and a running estimate of it is kept for evaluation
and sampling.

Generation (``generate``: grids, ``model.sample``, hence FID) draws what the likelihood names in
``generation``: the mean for Bernoulli and Gaussian, a sample of the mixture for DLML (component,
then each logistic channel in order, then discretised, as PixelCNN++ does). ``mean`` stays
available by name (reconstructions use it); ``sample`` always draws pixel noise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BIN = 1.0 / 255.0  # half the width of one of the 256 bins on the [-1, 1] scale
GAUSSIAN_INIT_STD = 0.5  # initial shared std on the [-1, 1] scale: the spread of image pixels themselves
GAUSSIAN_STD_LR = 0.01  # Adam learning rate of the learned log-std (docs/rgb.md: why not the model's lr)
CALIBRATION_MOMENTUM = 0.1  # weight of each batch's closed-form log-std in the calibrated running estimate
SQRT_HALF = math.sqrt(0.5)
MIN_LOG_SCALE = -7.0  # PixelCNN++'s lower bound of the logistic log-scale


class Likelihood(nn.Module):
    """Interface: ``nll(params, x)`` -> (B,) nats; ``mean(params)``, ``sample(params, g)`` -> images in [0, 1]."""

    param_channels: int = 1  # decoder channels per image channel (see out_channels)
    #: True when nll is -log P of the 8-bit image (so bits/dim is a true code length)
    discrete: bool = False
    #: what generated images show: "mean" (the likelihood's mean) or "sample" (a draw of the pixels)
    generation: str = "mean"

    def __init__(self, channels: int = 1):
        super().__init__()
        self.channels = channels

    @property
    def out_channels(self) -> int:
        """Channels the decoder must output for one image."""
        return self.channels * self.param_channels

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def draw(self, params: Tensor, pixels: str, generator: torch.Generator | None = None) -> Tensor:
        """Images for ``pixels``: "mean", "sample", or "generation" (this likelihood's :attr:`generation`)."""
        pixels = self.generation if pixels == "generation" else pixels
        if pixels == "mean":
            return self.mean(params)
        if pixels == "sample":
            if generator is None:
                raise ValueError("drawing pixel samples needs a seeded generator")
            return self.sample(params, generator)
        raise ValueError(f"pixels must be 'mean', 'sample' or 'generation', got {pixels!r}")


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """nats/image -> bits/dim."""
    return nats_per_image / dims / math.log(2)


class Bernoulli(Likelihood):
    """Bernoulli on [0, 1] intensities: BCE with logits, summed per image.

    Grey intensities are used as soft targets (no binarisation), as in the paper's BCE.
    Generation grids show the mean, sigmoid(logits).
    """

    param_channels = 1

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


def _to_pm1(x: Tensor) -> Tensor:
    return x * 2.0 - 1.0


def _to_unit(x: Tensor) -> Tensor:
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def quantise_pm1(x: Tensor) -> Tensor:
    """Round [-1, 1] values to the nearest of the 256 bin centres."""
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * 127.5) / 127.5 - 1.0


def discretised_gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Elementwise log P(x) of values x on the 256-bin grid of [-1, 1] under N(mean, std^2), edge bins open.

    P = Phi(U) - Phi(L) for the standardised bin edges (L = -inf for x = -1, U = +inf for x = 1),
    evaluated as Phi(-L) - Phi(-U) when the bin lies right of the mean, so both CDF values are in
    the left tail and the difference loses no precision. Where it underflows (a pixel more than
    about 11 std from the mean) the density at the bin centre times the bin width is used.
    """
    inv = torch.exp(-log_std)
    c = x - mean
    upper = torch.where(x > 0.999, torch.full_like(c, math.inf), (c + BIN) * inv)
    lower = torch.where(x < -0.999, torch.full_like(c, -math.inf), (c - BIN) * inv)
    flip = c > 0
    hi = torch.where(flip, -lower, upper)
    lo = torch.where(flip, -upper, lower)
    p = 0.5 * (
        torch.erfc(-hi * SQRT_HALF) - torch.erfc(-lo * SQRT_HALF)
    )  # Phi(v) = erfc(-v / sqrt 2) / 2, exact in the left tail
    tail = -0.5 * (c * inv) ** 2 - log_std - 0.5 * math.log(2 * math.pi) + math.log(2 * BIN)
    floor = 1e-290 if p.dtype == torch.float64 else 1e-30  # below it the difference is not reliable
    return torch.where(p > floor, torch.log(p.clamp_min(floor)), tail)


GAUSSIAN_STD_MODES = ("learned", "calibrated")


class PixelScale(nn.Module):
    """The Gaussian likelihood's one std, shared by every pixel, image, decoder branch and group.

    ``learned``: ``log_std`` is a parameter (initial std ``init_std`` on the [-1, 1] scale) that the
    model's optimiser trains with its own learning rate (:data:`GAUSSIAN_STD_LR`), since Adam moves a
    scalar by about its learning rate per step whatever the gradient. ``calibrated`` (sigma-VAE):
    in training, the std of a batch is the closed-form optimum sqrt(mean squared error) of that
    batch's pixels (a constant for the gradient); ``log_std`` is then a buffer holding a running
    average (in log space, momentum :data:`CALIBRATION_MOMENTUM`) used in evaluation and sampling,
    so that the evaluated NLL is a proper density of the test image. Either way ``log_std`` lives
    under the model's ``pixel_scale.`` key and is averaged over all participants.
    """

    def __init__(self, mode: str = "learned", init_std: float = GAUSSIAN_INIT_STD):
        super().__init__()
        if mode not in GAUSSIAN_STD_MODES:
            raise ValueError(f"gaussian std mode must be one of {GAUSSIAN_STD_MODES}, got {mode!r}")
        self.mode = mode
        init = torch.tensor(math.log(init_std))
        if mode == "learned":
            self.log_std = nn.Parameter(init)
        else:
            self.register_buffer("log_std", init)

    def for_batch(self, x_pm1: Tensor, mean: Tensor) -> Tensor:
        """The log-std that scores ``x_pm1`` against ``mean`` (both on the [-1, 1] scale)."""
        if self.mode == "calibrated" and self.training:
            return self.calibrate(x_pm1, mean)
        return self.log_std

    @torch.no_grad()
    def calibrate(self, x_pm1: Tensor, mean: Tensor) -> Tensor:
        """sigma-VAE: log sqrt(MSE) of the batch (at least one bin), folded into the running estimate."""
        mse = (x_pm1 - mean).pow(2).mean()
        log_std = (0.5 * torch.log(mse)).clamp_min(math.log(BIN))
        self.log_std.lerp_(log_std.to(self.log_std.dtype), CALIBRATION_MOMENTUM)
        return log_std


class Gaussian(Likelihood):
    """Discretised Gaussian whose std is one :class:`PixelScale` (the paper's shared global variance).

    The decoder outputs the mean (on the [-1, 1] scale, unconstrained). Inside a model every branch
    refers to the model's one ``pixel_scale`` (held by reference, not as a submodule, so its
    ``log_std`` is a single state-dict entry outside the branches); built alone it owns its scale.
    """

    param_channels = 1
    discrete = True

    def __init__(self, channels: int = 1, scale: PixelScale | None = None):
        super().__init__(channels)
        if scale is None:
            self.scale = PixelScale()
        else:
            self.__dict__["scale"] = scale  # a reference: not registered, so not in this branch's state dict

    @property
    def log_std(self) -> Tensor:
        return self.scale.log_std

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        xs = _to_pm1(x)
        return -discretised_gaussian_log_prob(xs, params, self.scale.for_batch(xs, params)).flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        return _to_unit(params)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(params.shape, generator=generator, dtype=params.dtype).to(params.device)
        return _to_unit(quantise_pm1(params + torch.exp(self.log_std) * eps))


OPEN = 1e8  # distance to the outer edge of an edge bin: effectively infinite, but finite so gradients stay finite


def bin_edges(x: Tensor) -> tuple[Tensor, Tensor]:
    """Distances from x (on the [-1, 1] grid) to the upper and lower edge of its bin; the edge bins are open."""
    open_, bin_ = x.new_tensor(OPEN), x.new_tensor(BIN)  # in x's dtype (Python scalars would give float32)
    return torch.where(x > 0.999, open_, bin_), torch.where(x < -0.999, open_, bin_)


def discretised_logistic_log_prob(
    x: Tensor, mean: Tensor, log_scale: Tensor, edges: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Elementwise log P(x) of values x on the 256-bin grid of [-1, 1] under Logistic(mean, scale), edge bins open.

    Exact in closed form: with a, b the standardised upper and lower bin edges,
    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)); for the edge bins a or b is
    pushed out by :data:`OPEN`, which turns the formula into sigmoid(a) or sigmoid(-b).
    """
    up, down = edges if edges is not None else bin_edges(x)
    inv = torch.exp(-log_scale)
    c = x - mean
    width = (up + down) * inv  # the bin's width in scale units; log(1 - exp(-width)) ~ log(width) - width/2 when tiny
    log_width = torch.log(up + down) - log_scale
    log_one_minus = torch.where(width < 1e-4, log_width - 0.5 * width, torch.log(-torch.expm1(-width.clamp_min(1e-4))))
    return -F.softplus(-(c + up) * inv) - F.softplus((c - down) * inv) + log_one_minus


class DiscretisedLogisticMixture(Likelihood):
    """PixelCNN++'s discretised logistic mixture, channel-coupled, K components (Salimans et al. 2017).

    Per pixel the decoder outputs K mixture logits, K*C means, K*C log-scales and K*C(C-1)/2
    coupling coefficients (tanh-squashed). Within component k, channel c is logistic with mean
    ``mu_kc + sum_{j<c} coeff_kcj * x_j`` (RGB: G depends on R, B on R and G), so the mixture
    models the colour channels jointly. Log-scales are clamped below at -7 as in PixelCNN++.
    """

    discrete = True
    generation = "sample"  # PixelCNN++: generated images are draws of the mixture, not its (blurred) mean

    def __init__(self, channels: int = 3, components: int = 10):
        super().__init__(channels)
        self.components = components
        self.num_coeffs = channels * (channels - 1) // 2

    @property
    def out_channels(self) -> int:
        return self.components * (1 + 2 * self.channels + self.num_coeffs)

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """params (B, P, H, W) -> logits (B,K,H,W), means (B,K,C,H,W), log_scales (B,K,C,H,W),
        coeffs (B,K,C(C-1)/2,H,W)."""
        b, _, h, w = params.shape
        k, c = self.components, self.channels
        logits, means, log_scales, coeffs = params.split([k, k * c, k * c, k * self.num_coeffs], dim=1)
        return (
            logits,
            means.reshape(b, k, c, h, w),
            log_scales.reshape(b, k, c, h, w).clamp_min(MIN_LOG_SCALE),
            torch.tanh(coeffs.reshape(b, k, self.num_coeffs, h, w)),
        )

    def log_prob_pixels(self, params: Tensor, x: Tensor) -> Tensor:
        """(B, H, W) log P of each pixel's C values; x in [0, 1] on the 8-bit grid."""
        logits, means, log_scales, coeffs = self._split(params)
        xs = _to_pm1(x)  # (B, C, H, W); channel slices broadcast over the K components
        up, down = bin_edges(xs)
        total, idx = F.log_softmax(logits, dim=1), 0
        for c in range(self.channels):
            m = means[:, :, c]
            for j in range(c):  # channel coupling: the mean of c moves with the observed earlier channels
                m = m + coeffs[:, :, idx] * xs[:, j : j + 1]
                idx += 1
            edges = (up[:, c : c + 1], down[:, c : c + 1])
            total = total + discretised_logistic_log_prob(xs[:, c : c + 1], m, log_scales[:, :, c], edges)
        return torch.logsumexp(total, dim=1)

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        return -self.log_prob_pixels(params, x).flatten(1).sum(1)

    def mean(self, params: Tensor) -> Tensor:
        logits, means, _, coeffs = self._split(params)
        expected: list[Tensor] = []
        idx = 0  # E[x_c | k] = mu_kc + sum_{j<c} coeff_kcj E[x_j | k] (logistic edges ignored)
        for c in range(self.channels):
            m = means[:, :, c]
            for j in range(c):
                m = m + coeffs[:, :, idx] * expected[j]
                idx += 1
            expected.append(m)
        weights = F.softmax(logits, dim=1).unsqueeze(2)
        return _to_unit((weights * torch.stack(expected, dim=2)).sum(1))

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        logits, means, log_scales, coeffs = self._split(params)
        b, k, c, h, w = means.shape
        u = torch.rand(logits.shape, generator=generator, dtype=params.dtype).to(params.device)
        pick = (
            F.one_hot((logits - torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-10)))).argmax(1), k)
            .permute(0, 3, 1, 2)
            .unsqueeze(2)
            .to(params.dtype)
        )
        mu = (means * pick).sum(1)  # (B, C, H, W)
        scale = torch.exp((log_scales * pick).sum(1))
        coef = (coeffs * pick).sum(1)
        out: list[Tensor] = []
        idx = 0
        for ch in range(c):
            m = mu[:, ch]
            for j in range(ch):
                m = m + coef[:, idx] * out[j]
                idx += 1
            v = torch.rand(m.shape, generator=generator, dtype=params.dtype).to(params.device).clamp(1e-5, 1 - 1e-5)
            out.append(quantise_pm1(m + scale[:, ch] * (torch.log(v) - torch.log1p(-v))))
        return _to_unit(torch.stack(out, dim=1))


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "dlml": DiscretisedLogisticMixture,
}


def build_likelihood(name: str, channels: int = 1, components: int = 10, scale: PixelScale | None = None) -> Likelihood:
    """The likelihood ``name`` for images of ``channels`` channels (``components``: DLML's K; ``scale``: the
    Gaussian's shared :class:`PixelScale`)."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    if name == "dlml":
        return DiscretisedLogisticMixture(channels, components)
    if name == "gaussian":
        return Gaussian(channels, scale)
    return LIKELIHOODS[name](channels)
