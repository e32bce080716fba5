"""The audit of a run folder: memorisation, membership inference, cross-group leakage -> ``<run>/audit.json``.

Every random choice (which training and test images, the posterior draws of the ELBO, k-means)
comes from the run seed's ``audit`` stream; the samples are the ones ``fissionvae evaluate``
scores (its ``sample`` stream). Inception features of real images are cached where FID keeps
its own (keyed by image content and extractor), those of samples in ``<run>/audit/cache/``, so an
interrupted audit resumes without recomputing them. ``audit.json`` is written last, atomically.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.audit.membership import cross_group_leakage, loss_threshold_attack, subset
from fissionvae.audit.memorisation import Features, copy_grid, memorisation_report
from fissionvae.data.federated import build_clients, load_groups
from fissionvae.evaluation.generation import generate, to_uint8
from fissionvae.evaluation.trained_run import model_of, open_for_eval, weights_digest
from fissionvae.io import atomic_write_json
from fissionvae.models.vae import FissionVAE

AUDIT_FORMAT = 1


@dataclass
class AuditOptions:
    """What to audit and how much of it; every count is per group (or per client) and validated."""

    num_samples: int = 1000  # generated images per group
    max_train: int = 2000  # training (and as many test) images per group / client
    cells: int = 20  # k-means cells of the data-copying test
    elbo_samples: int = 4  # posterior draws averaged in each image's negative ELBO
    inception: bool = True  # also measure in FID Inception feature space
    inception_path: str | None = None
    pathway: str | None = None
    allow_unfinished: bool = False
    data_dir: str | None = None
    progress: bool = True
    device: str = "cpu"

    def validate(self) -> None:
        for name in ("num_samples", "max_train", "cells", "elbo_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")


class NotAuditable(ValueError):
    """The run's model has no likelihood to audit (a GAN)."""


def _inception_features(opts: AuditOptions, cache: Path) -> Features:
    """Inception features, cached: real images where FID caches them, samples under ``cache``."""
    from fissionvae.evaluation.feature_cache import cached_features
    from fissionvae.evaluation.fid import InceptionFeatures, StatsCache
    from fissionvae.evaluation.inception import resolve_inception_path

    extractor = InceptionFeatures(
        resolve_inception_path(opts.inception_path), progress=opts.progress, device=opts.device
    )
    stats_cache = StatsCache()

    def features(images: Tensor, role: str) -> np.ndarray:
        key = stats_cache.key(images, extractor.identity)
        folder = cache / "features" if role == "generated" else stats_cache.cache_dir / "features"
        return cached_features(images, extractor, folder, key, desc=role)

    return features


def audit_run(run_dir: str | Path, opts: AuditOptions | None = None) -> dict:
    """Audit a finished VAE run; writes ``<run>/audit.json`` and ``<run>/audit/*.png``; returns the result."""
    opts = opts or AuditOptions()
    opts.validate()
    start = time.perf_counter()
    run, state = open_for_eval(run_dir, opts.allow_unfinished)
    cfg = run.load_config()
    model = model_of(run, state, opts.device)
    if not isinstance(model, FissionVAE):
        raise NotAuditable(
            f"{run.path}: a {cfg.model.kind} model defines no likelihood; the audit needs a VAE run "
            "(membership inference scores images by their negative ELBO)"
        )
    if opts.pathway is not None:
        model._check_pathway(opts.pathway)
    digest = weights_digest(state.weights)
    out = run.path / "audit"
    cache = out / "cache" / hashlib.sha256(f"{digest}|{opts.num_samples}|{opts.pathway}".encode()).hexdigest()[:16]
    features = _inception_features(opts, cache) if opts.inception else None  # a missing file fails before any write
    groups = load_groups(cfg, opts.data_dir, progress=opts.progress)
    seed, names = cfg.seed, cfg.group_names
    memorisation, pairs = {}, {}
    for gi, g in enumerate(tqdm(groups, desc="memorisation", unit="group", disable=not opts.progress)):
        train = to_uint8(subset(g.train_images, opts.max_train, seed, 5, gi))
        test = to_uint8(subset(g.test_images, opts.max_train, seed, 1, gi))
        samples = generate(model, gi, opts.num_samples, seed, opts.pathway)
        memorisation[g.name] = memorisation_report(samples, train, test, opts.cells, seed, features)
        pairs[g.name] = (samples, train)
    test_images = [g.test_images for g in groups]
    result = {
        "format": AUDIT_FORMAT,
        "run": str(run.path),
        "name": cfg.name,
        "mode": cfg.mode,
        "round": state.round,
        "weights_sha256": digest,
        "pathway": opts.pathway or model.default_pathway(),
        "options": asdict(opts),
        "memorisation": memorisation,
        "membership": loss_threshold_attack(
            model,
            build_clients(cfg, groups),
            test_images,
            names,
            seed,
            opts.max_train,
            opts.elbo_samples,
            opts.progress,
        ),
        "cross_group": cross_group_leakage(
            model,
            [g.train_images for g in groups],
            test_images,
            names,
            seed,
            opts.max_train,
            opts.elbo_samples,
            opts.progress,
        ),
    }
    # pictures last, once every number is computed: a failed audit leaves no pictures either
    result["pictures"] = [copy_grid(*pairs[name], out / f"closest_to_training_{name}.png").name for name in names]
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(run.path / "audit.json", result)
    return result


def summary_lines(result: dict) -> list[str]:
    """A few human-readable lines of an audit.json result."""
    lines = [f"{result['name']} [{result['mode']}], round {result['round']}"]
    for name, mem in result["memorisation"].items():
        for space, rep in mem.items():
            ct = rep["data_copying"]["c_t"]
            lines.append(
                f"{name} ({space}): NN ratio {rep['nn_ratio_median']:.3f}, "
                f"closer to train {rep['share_closer_to_train']:.2f}, "
                f"data-copying C_T {'n/a' if ct is None else f'{ct:+.2f}'}"
            )
    for name, rep in result["membership"]["per_group"].items():
        lines.append(
            f"{name}: membership AUC {rep['auc']:.3f}, TPR@1%FPR {rep['tpr_at_1pct_fpr']['tpr']:.3f}, "
            f"TPR@0.1%FPR {rep['tpr_at_0.1pct_fpr']['tpr']:.3f}"
        )
    for pair, rep in result["cross_group"].get("pairs", {}).items():
        lines.append(f"cross-group {pair}: AUC {rep['auc']:.3f} (own branch {rep['own_branch_auc']:.3f})")
    return lines
