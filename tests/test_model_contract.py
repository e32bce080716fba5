"""The model contract (fissionvae.models.protocol): one shared suite that every model class passes.

Every Table 1 variant on grey 28x28 and on RGB 32x32 (each pixel likelihood), every prior
strategy, and the FedGAN baseline's DCGAN at both sizes: protocol conformance, state-dict round
trip, seeded determinism, a finite local step that touches only the owned keys, sample shape and
range (and pathway refusals), and the ``owned_keys`` partition of the state dict.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tests.helpers import REPO, TABLE1, rgb_config, tiny_config

from fissionvae.config import PRIOR_STRATEGIES, ModelConfig, RunConfig
from fissionvae.models.protocol import GenerativeModel, LatentVariableModel
from fissionvae.models.vae import PATHWAYS, build_model

_GAN = {k: v for k, v in dataclasses.asdict(ModelConfig()).items() if k != "gan"} | {
    "kind": "dcgan",
    "gan": {"noise_dim": 16, "g_features": 8, "d_features": 8},
}


def _grey(model: dict) -> RunConfig:
    return tiny_config(REPO / "unused-data", model=model)


CASES: dict[str, tuple[RunConfig, tuple[int, int, int]]] = {
    **{f"grey-{name}": (_grey(m), (1, 28, 28)) for name, m in TABLE1.items()},
    **{
        f"rgb-{name}-{lik}": (rgb_config(model={**m, "likelihood": lik, "dlml_components": 3}), (3, 32, 32))
        for name, m in TABLE1.items()
        for lik in ("gaussian", "dlml", "bernoulli")
        if lik == "gaussian" or name in ("fission_ld", "fission_hld")  # each likelihood, flat and hierarchical
    },
    **{
        f"rgb-prior-{p}": (
            rgb_config(model={"prior": p, "decoder_branches": True, "hierarchical": p == "learnable"}),
            (3, 32, 32),
        )
        for p in PRIOR_STRATEGIES
    },
    "grey-dcgan": (_grey(_GAN), (1, 28, 28)),
    "rgb-dcgan": (rgb_config(model=_GAN), (3, 32, 32)),
}


@pytest.fixture(params=sorted(CASES))
def case(request) -> tuple[RunConfig, tuple[int, int, int]]:
    return CASES[request.param]


def _build(cfg: RunConfig, shape: tuple[int, int, int]) -> GenerativeModel:
    return build_model(cfg, shape)


def _batch(model: GenerativeModel, n: int = 6, group: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *model.image_shape, generator=g)
    gid = torch.full((n,), group) if group is not None else torch.arange(n) % model.num_groups
    return x, gid


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_satisfies_the_protocol(case):
    model = _build(*case)
    assert isinstance(model, GenerativeModel)
    assert isinstance(model, LatentVariableModel) == (model.kind == "vae")
    assert model.kind == case[0].model.kind and model.image_shape == case[1]
    assert set(model.progress_terms) <= set(model.terms(*_batch(model), _gen()))


def test_seeded_determinism(case):
    a, b = _build(*case), _build(*case)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    x, gid = _batch(a)
    ta, tb = a.terms(x, gid, _gen(1)), b.terms(x, gid, _gen(1))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    a.eval(), b.eval()
    assert torch.equal(a.sample(0, 4, _gen(2)), b.sample(0, 4, _gen(2)))
    assert not torch.equal(a.sample(0, 4, _gen(2)), a.sample(0, 4, _gen(3)))


def test_state_dict_round_trip(case):
    cfg, shape = case
    model = _build(cfg, shape).eval()
    other = _build(dataclasses.replace(cfg, seed=cfg.seed + 1), shape).eval()
    state = model.state_dict()
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in state.items())  # another seed, other weights
    other.load_state_dict({k: v.clone() for k, v in state.items()})
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    assert torch.equal(model.sample(1, 4, _gen(5)), other.sample(1, 4, _gen(5)))
    x, gid = _batch(model)
    name = model.progress_terms[0]
    assert torch.equal(model.terms(x, gid, _gen(6))[name], other.terms(x, gid, _gen(6))[name])


@pytest.mark.parametrize("group", [0, 1])
def test_local_step_is_finite_and_trains_exactly_the_owned_keys(case, group):
    model = _build(*case).train()
    owned = set(model.owned_keys([group]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = model.local_optimizer([group], 1e-3, False)
    x, gid = _batch(model, group=group)
    terms = model.local_step(x, gid, optimizer, _gen(7))
    assert terms and all(v.shape == (6,) and torch.isfinite(v).all() for v in terms.values())
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= owned, f"a local step changed keys the client does not own: {sorted(changed - owned)[:3]}"
    params = {name for name, _ in model.named_parameters()}  # type: ignore[attr-defined]
    assert owned & params <= changed, f"owned parameters left untrained: {sorted((owned & params) - changed)[:3]}"
    optimizer.load_state_dict(optimizer.state_dict())  # what a kept client optimiser does between rounds


def test_sample_shape_range_and_pathways(case):
    model = _build(*case).eval()
    for group in (0, model.group_names[-1]):
        images = model.sample(group, 5, _gen(8))
        assert images.shape == (5, *model.image_shape)
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    for pathway in PATHWAYS:
        if pathway == model.default_pathway() or (
            isinstance(model, LatentVariableModel) and model.hierarchical and model.has_fixed_prior  # type: ignore[attr-defined]
        ):
            assert model.sample(0, 2, _gen(9), pathway).shape == (2, *model.image_shape)
        else:
            with pytest.raises(ValueError):
                model.sample(0, 2, _gen(9), pathway)
    with pytest.raises(ValueError, match="group"):
        model.sample("no-such-group", 1, _gen(9))
    if isinstance(model, LatentVariableModel):
        x, gid = _batch(model)
        assert model.reconstruct(x, gid).shape == x.shape


def test_owned_keys_partition_the_state_dict(case):
    cfg, _ = case
    model = _build(*case)
    keys = list(model.state_dict())
    params = {name for name, _ in model.named_parameters()}  # type: ignore[attr-defined]
    per_group = [set(model.owned_keys([g])) for g in range(model.num_groups)]
    for g in range(model.num_groups):
        owned = model.owned_keys([g])
        assert len(owned) == len(set(owned)) and set(owned) <= set(keys)
    everyone = set().union(*per_group)
    assert model.owned_keys(list(range(model.num_groups))) == [k for k in keys if k in everyone]
    assert not (set(keys) - everyone) & params, "every parameter is trained by some client"
    # per-group decoder branches (+D): each group owns keys no other group does; otherwise all own the same
    private = [per_group[g] - set().union(*(per_group[:g] + per_group[g + 1 :])) for g in range(model.num_groups)]
    assert all(private) == (cfg.model.kind == "vae" and cfg.model.decoder_branches)
