"""Record-level DP-SGD: one local update with per-sample clipping and Gaussian noise (Opacus).

Called by :func:`~fissionvae.federation.client.client_update` when the round's spec carries a
clip norm (``spec.dp_clip``), so every engine (in-process, worker pool, Flower) trains the same way.

- Batches are Poisson samples: each step takes every local image independently with probability
  ``q = batch_size / n`` (the sampling the RDP/PRV accountants assume; shuffled fixed-size batches
  are not covered by their analysis). A local update runs as many steps as the non-private one
  (``train.local_steps``, else ``local_epochs * ceil(n / batch_size)``); the draws come from the
  client's seeded stream, the noise from stream ("privacy", 0, round, client).
- Opacus computes per-sample gradient norms. ``ghost`` (default, fastest: bench/dp_speed.py) never
  materialises per-sample gradients: a first backward pass gives the norms, the second back-propagates
  the per-sample losses scaled by ``min(1, C / norm)``. ``hooks`` and ``functorch`` materialise them.
- Opacus's DP optimiser adds N(0, (sigma C)^2) to the summed clipped gradients and divides by the
  *expected* batch size, then the client's Adam steps. Only the client's own parameters (encoder and
  its branch) are trainable during the update; per-sample norms cover exactly those.
"""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from fissionvae.data.federated import ClientData
from fissionvae.seeding import torch_generator


def dp_steps(num_samples: int, epochs: int, batch_size: int, steps: int | None) -> int:
    """Steps of one private local update: ``steps`` if set, else ``epochs`` passes of ``ceil(n / B)``."""
    return steps if steps is not None else epochs * math.ceil(num_samples / batch_size)


def sample_rate(num_samples: int, batch_size: int) -> float:
    """Poisson sampling probability of one image per step."""
    return min(1.0, batch_size / num_samples)


@contextlib.contextmanager
def only_trainable(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
    """Make ``params`` the model's only trainable parameters for the block; restore afterwards."""
    keep = {id(p) for p in params}
    before = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in before:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in before:
            p.requires_grad_(flag)


def dp_train(model, optimizer: torch.optim.Optimizer, data: ClientData, spec, generator: torch.Generator):
    """DP-SGD over one local update; returns (summed per-image terms, steps, images trained on)."""
    n, batch = data.num_samples, spec.batch_size
    q = sample_rate(n, batch)
    noise = torch_generator(spec.seed, "privacy", 0, spec.round, data.client_id)
    totals: dict[str, Tensor] = {}
    seen = 0
    steps = dp_steps(n, spec.epochs, batch, spec.steps)
    with private_steps(model, optimizer, spec.dp_clip, spec.dp_noise, batch, spec.dp_grad_sample_mode, noise) as step:
        for _ in range(steps):
            idx = (torch.rand(n, generator=generator) < q).nonzero(as_tuple=True)[0].to(data.images.device)
            terms = step(data.images[idx], data.group_ids[idx], generator)
            seen += len(idx)
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + value.detach().sum()
    return {k: float(v) for k, v in totals.items()}, steps, seen


StepFn = Callable[[Tensor, Tensor, torch.Generator], dict[str, Tensor]]


@contextlib.contextmanager
def private_steps(
    model,
    optimizer: torch.optim.Optimizer,
    clip: float,
    noise_multiplier: float,
    expected_batch: int,
    mode: str,
    noise: torch.Generator,
) -> Iterator[StepFn]:
    """Yield ``step(images, group_ids, generator) -> per-image terms``: one DP-SGD step of ``optimizer``.

    Inside the block only ``optimizer``'s parameters are trainable and Opacus's hooks are on
    ``model``; both are undone on exit. An empty batch is a step too: noise alone moves the weights.
    """
    from opacus.grad_sample import GradSampleHooks, GradSampleHooksFastGradientClipping
    from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

    params = [p for group in optimizer.param_groups for p in group["params"]]
    # Opacus computes the noise std as noise_multiplier * clip: keep that 0 (not nan) for clip = inf
    finite_clip = clip if math.isfinite(clip) else sys.float_info.max
    options = dict(
        noise_multiplier=noise_multiplier,
        max_grad_norm=finite_clip,
        expected_batch_size=expected_batch,
        generator=noise,
    )
    ghost = mode == "ghost"
    with only_trainable(model, params), warnings.catch_warnings():
        # the first layer's input (the images) needs no gradient; Opacus's hooks are right to fire there
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
        if ghost:
            hooks = GradSampleHooksFastGradientClipping(model, loss_reduction="mean", max_grad_norm=finite_clip)
            dp_opt: DPOptimizer = DPOptimizerFastGradientClipping(optimizer, **options)
        else:
            hooks = GradSampleHooks(model, loss_reduction="mean", force_functorch=mode == "functorch")
            dp_opt = DPOptimizer(optimizer, **options)

        def step(images: Tensor, group_ids: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
            dp_opt.zero_grad(set_to_none=True)
            if len(images) == 0:
                _noise_only_step(dp_opt)
                return {}
            terms = model.terms(images, group_ids, generator)
            if ghost:
                DPTensorFastGradientClipping(hooks, dp_opt, terms["loss"], "mean").backward()
            else:
                terms["loss"].mean().backward()
            dp_opt.step()
            return terms

        try:
            yield step
        finally:
            hooks.remove_hooks()
            for p in params:
                for attr in ("grad_sample", "_norm_sample", "summed_grad", "_forward_counter"):
                    if hasattr(p, attr):
                        delattr(p, attr)


def _noise_only_step(dp_opt) -> None:
    """A step on an empty batch: summed clipped gradient zero, then Opacus's noise, scaling and the inner step."""
    for p in dp_opt.params:
        p.summed_grad = torch.zeros_like(p)
    dp_opt.add_noise()
    dp_opt.scale_grad()
    dp_opt.original_optimizer.step()
