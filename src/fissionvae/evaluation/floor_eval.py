"""The floor row of every results table: the mean-image model (:mod:`fissionvae.evaluation.floor`), evaluated.

Fitted per group on that group's training images, scored on the test images the evaluations use
(the full test sets, or the seeded ``--test-size`` subsets). Its NLL per group is exact (no
bound): a VAE whose negative ELBO is not below it has learned nothing about the images.

Its FID: the Bernoulli floor's every sample is its mean image, so its generated features are one
point per group (covariance zero), with as many copies as an evaluation generates. Only the one
image per group goes through the Inception network. FID compares means and covariances, so it
scores a model that always draws the same image, not a model that knows nothing; the row shows
how far the samples are from the test sets with no diversity at all. RGB models (Gaussian or DLML
likelihoods) get the per-pixel Gaussian floor: its NLL only, since its samples are pixel noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fissionvae.config import RunConfig, load_config
from fissionvae.data.federated import load_groups
from fissionvae.evaluation.feature_cache import extractor_for, reference_stats
from fissionvae.evaluation.floor import FloorModel
from fissionvae.evaluation.frechet import pooled_stats
from fissionvae.evaluation.generation import to_uint8
from fissionvae.evaluation.options import EvalOptions
from fissionvae.evaluation.shares import split_counts


def floor_entry(cfg: RunConfig, data_dir: str | None, eopts: EvalOptions) -> dict:
    """NLL per group (nats/image, nats/dim, bits/dim) and, when ``eopts.fid``, FID of the floor's samples."""
    if eopts.test_size is not None:
        subset = [f"data.groups.{i}.test_size={eopts.test_size}" for i in range(len(cfg.data.groups))]
        cfg = load_config(raw=cfg.to_dict(), overrides=subset)
    groups = load_groups(cfg, data_dir, progress=eopts.progress)
    kind = "bernoulli" if cfg.model.likelihood == "bernoulli" else "gaussian"
    floors = [FloorModel.fit(g.train_images, kind) for g in groups]
    dims = math.prod(groups[0].test_images.shape[1:])
    nll = {}
    for g, floor in zip(groups, floors, strict=True):
        per_image = float(floor.nll(g.test_images).mean())
        nll[g.name] = {"nats_per_image": per_image, "nats_per_dim": per_image / dims, "images": len(g.test_images)}
    images = sum(v["images"] for v in nll.values())
    overall = sum(v["nats_per_dim"] * v["images"] for v in nll.values()) / images
    out = {"kind": kind, "nll": nll, "nll_overall_nats_per_dim": overall, "test_size": eopts.test_size, "fid": None}
    if eopts.fid and kind == "bernoulli":  # a Gaussian floor's samples are noise: its FID says nothing
        out["fid"] = floor_fid(groups, floors, eopts)
    return out


def floor_fid(groups: list, floors: list[FloorModel], eopts: EvalOptions) -> dict | None:
    """FID of the floor's samples (each group's mean image, repeated), overall and per group.

    None when the test sets' Inception statistics are not cached yet: the floor never costs a pass
    of the test sets through the Inception network by itself (an evaluation of the same test
    images caches them, and the next call fills the floor's FID in).
    """
    from fissionvae.evaluation.fid import FeatureStats, fid_from_stats

    extractor = extractor_for(eopts)
    sizes = [len(g.test_images) for g in groups]
    counts = split_counts(eopts.num_samples or sum(sizes), sizes)
    real, fake, per_group = [], [], {}
    for g, floor, n in zip(groups, floors, counts, strict=True):
        r = reference_stats(g, extractor, cached_only=True)
        if r is None:
            return None
        feats = extractor(to_uint8(floor.mean.to(torch.float32).unsqueeze(0))).astype(np.float64)[0]
        f = FeatureStats(feats, np.zeros((feats.size, feats.size)), n)
        real.append(r)
        fake.append(f)
        per_group[g.name] = fid_from_stats(r, f)
    return {"overall": fid_from_stats(pooled_stats(real), pooled_stats(fake)), "per_group": per_group}
