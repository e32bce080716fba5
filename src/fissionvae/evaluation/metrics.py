"""The evaluation's metrics of generated images: FID, classifier scores and the likelihood bounds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fissionvae.data.federated import GroupData
from fissionvae.evaluation.collapse import pool_coverage
from fissionvae.evaluation.feature_cache import cached_features, reference_stats
from fissionvae.evaluation.fid import FeatureExtractor, feature_stats, fid_from_stats, pooled_stats
from fissionvae.evaluation.generation import to_uint8
from fissionvae.evaluation.nll import nll_report, pooled
from fissionvae.evaluation.options import EvalOptions
from fissionvae.io import atomic_write_json
from fissionvae.models.protocol import LatentVariableModel
from fissionvae.seeding import torch_generator

NLL_SKIPPED = "a GAN defines no likelihood p(x): there is no ELBO or importance-weighted bound to compute"


def fid_metrics(
    samples: list[Tensor], groups: list[GroupData], extractor: FeatureExtractor, cache: Path, opts: EvalOptions
) -> dict:
    """Overall and per-group FID, with the real statistics cached by content + extractor."""
    real, fake, per_group, generated = [], [], {}, []
    for gi, g in enumerate(groups):
        r = reference_stats(g, extractor)
        assert r is not None  # computed when not cached (cached_only is False)
        feats = cached_features(
            samples[gi],
            extractor,
            cache / "features",
            hashlib.sha256(f"{cache.name}|{gi}|{extractor.identity}".encode()).hexdigest(),
            desc=f"{g.name} samples",
        )
        generated.append(feats)
        f = feature_stats(feats)
        real.append(r)
        fake.append(f)
        per_group[g.name] = {"fid": fid_from_stats(r, f), "generated": f.n, "real": r.n}
    overall = fid_from_stats(pooled_stats(real), pooled_stats(fake))
    out = {
        "overall": overall,
        "generated": sum(f.n for f in fake),
        "real": sum(r.n for r in real),
        "per_group": per_group,
        "extractor": extractor.identity,
        "runtime": extractor.runtime,
        "precision": extractor.precision,
        # bf16 features move FID by about 1: such a number must not be set beside the paper's
        "paper_comparable": extractor.precision == "fp32",
    }
    if opts.fid_bootstrap > 0:
        from fissionvae.evaluation.noise import bootstrap_fid

        # resampled over the union of the groups' samples, the reference (both test sets) fixed
        lo, hi = bootstrap_fid(np.concatenate(generated), pooled_stats(real), reps=opts.fid_bootstrap, seed=0)
        out["bootstrap"] = {"interval": [lo, hi], "reps": opts.fid_bootstrap, "level": 0.95, "seed": 0}
    return out


def classifier_metrics(samples: list[Tensor], groups: list[GroupData], opts: EvalOptions) -> dict:
    """Domain-classifier IS, group purity and class coverage; IS from a user classifier if given."""
    from fissionvae.evaluation.classifier import group_scores, load_or_train
    from fissionvae.evaluation.inception_score import classifier_logits, inception_score

    clf = load_or_train(
        [(g.name, to_uint8(g.train_images), g.train_labels.numpy()) for g in groups],
        epochs=opts.classifier_epochs,
        progress=opts.progress,
    )
    pool = torch.cat(samples)
    pool_logits = clf.logits(pool)
    mean, std = inception_score(pool_logits, splits=10)
    out = {
        "classifier_test_accuracy": clf.accuracy(
            [(g.name, to_uint8(g.test_images), g.test_labels.numpy()) for g in groups]
        ),
        "is_domain": {"mean": mean, "std": std, "samples": len(pool), "splits": 10},
        "per_group": {
            g.name: group_scores(clf, samples[gi], gi) | _group_is(clf, samples[gi]) for gi, g in enumerate(groups)
        },
        "pool": pool_coverage(pool_logits.argmax(axis=1), clf),
    }
    if opts.is_classifier:
        user = torch.jit.load(opts.is_classifier, map_location="cpu").eval()
        m, s = inception_score(classifier_logits(user, pool), splits=10)
        out["is_user"] = {"mean": m, "std": s, "samples": len(pool), "classifier": str(opts.is_classifier)}
    return out


def _group_is(clf, images: Tensor) -> dict:
    """The sample count and the domain-classifier IS of one group's samples (Table 6 reports IS per group)."""
    out: dict = {"samples": len(images)}
    if len(images):
        from fissionvae.evaluation.inception_score import inception_score

        out["is_domain"] = inception_score(clf.logits(images), splits=min(10, len(images)))[0]
    return out


def nll_metrics(model: LatentVariableModel, groups: list[GroupData], seed: int, opts: EvalOptions, cache: Path) -> dict:
    """Per-group and overall negative ELBO and IW bound (per-group results cached for resume)."""
    per_group = {}
    for gi, g in enumerate(groups):
        path = cache / f"nll-{gi}-k{opts.iw_samples}.json"
        if path.is_file():
            per_group[g.name] = json.loads(path.read_text())
            continue
        per_group[g.name] = nll_report(
            model,
            g.test_images,
            gi,
            opts.iw_samples,
            torch_generator(seed, "eval", 10_000 + gi),
            progress=opts.progress,
        )
        atomic_write_json(path, per_group[g.name])
    return {"per_group": per_group, "overall": pooled(list(per_group.values()))}
