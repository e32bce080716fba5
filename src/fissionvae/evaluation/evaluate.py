"""``fissionvae evaluate``: every metric of a trained run, defined once, written to eval.json.

Protocol (the paper's): the real reference is each group's test set (as the run's config
defines it); the model generates as many images as there are evaluation images, each group's
share from that group's prior/branch. Reported: overall FID (union of samples vs union of test
sets) and per-group FID; classifier IS and group purity / class coverage from the domain
classifier (and IS from a user-supplied TorchScript classifier when given); negative ELBO and
the importance-weighted NLL bound per group and overall (VAEs; a DCGAN has no likelihood, so
``nll`` says ``skipped`` and why); mode-collapse measures (:mod:`fissionvae.evaluation.collapse`)
for every model. A DCGAN is unconditional: every group's share of the samples comes from the one
generator (independent draws), so the overall FID compares one pool with the union of the test
sets and per-group FID/purity score that same pool against each group. A smaller ``num_samples`` is allowed
and flagged as ``reduced`` everywhere (FID is biased upwards roughly as c/N: compare only
numbers computed with the same N).

Expensive work is cached so an interrupted evaluation resumes: Inception features in chunks
(generated ones in ``<run>/eval/cache``, real ones in the user cache), real-data statistics
keyed by dataset content and extractor identity, and per-group NLL results.

The parts live in their own modules: :mod:`~fissionvae.evaluation.options`,
:mod:`~fissionvae.evaluation.trained_run` (checkpoint, identity, model),
:mod:`~fissionvae.evaluation.generation`, :mod:`~fissionvae.evaluation.feature_cache`,
:mod:`~fissionvae.evaluation.metrics`, :mod:`~fissionvae.evaluation.pictures` and
:mod:`~fissionvae.evaluation.summary`; this module orchestrates them (and re-exports their public
names, which callers import from here).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fissionvae.data.federated import load_groups
from fissionvae.evaluation.collapse import collapse_report
from fissionvae.evaluation.feature_cache import cached_features, extractor_for, reference_stats
from fissionvae.evaluation.fid import pooled_stats
from fissionvae.evaluation.generation import generate, prior_partners, to_uint8
from fissionvae.evaluation.metrics import NLL_SKIPPED, classifier_metrics, fid_metrics, nll_metrics
from fissionvae.evaluation.options import EvalOptions
from fissionvae.evaluation.pictures import write_pictures
from fissionvae.evaluation.runtimes import RUNTIME_CHOICES
from fissionvae.evaluation.shares import split_counts
from fissionvae.evaluation.summary import summary_lines
from fissionvae.evaluation.trained_run import model_of, open_for_eval, weights_digest
from fissionvae.io import atomic_write_json
from fissionvae.models.protocol import LatentVariableModel

__all__ = [
    "EVAL_FORMAT",
    "NLL_SKIPPED",
    "EvalOptions",
    "cached_features",
    "classifier_metrics",
    "evaluate_run",
    "fid_metrics",
    "generate",
    "model_of",
    "nll_metrics",
    "open_for_eval",
    "pooled_stats",
    "prior_partners",
    "reference_stats",
    "split_counts",
    "summary_lines",
    "to_uint8",
    "weights_digest",
    "write_pictures",
]

EVAL_FORMAT = 1


def evaluate_run(run_dir: str | Path, opts: EvalOptions | None = None) -> dict:
    """Evaluate a run folder; writes ``<run>/eval.json`` and ``<run>/eval/*.png``; returns the result.

    (``<run>/<opts.result_name>.json`` and ``<run>/<opts.result_name>/`` when that is not ``eval``.)
    """
    opts = opts or EvalOptions()
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", opts.result_name):
        raise ValueError(
            f"result_name {opts.result_name!r}: use letters, digits, '_', '.' and '-' only (it names a file in the "
            "run folder)"
        )
    if opts.fid_runtime not in RUNTIME_CHOICES:
        raise ValueError(f"fid_runtime {opts.fid_runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    start = time.perf_counter()
    run, state = open_for_eval(run_dir, opts.allow_unfinished)
    cfg = run.load_config()
    if opts.test_size is not None:
        cfg = run.load_config([f"data.groups.{i}.test_size={opts.test_size}" for i in range(len(cfg.data.groups))])
    extractor = extractor_for(opts) if opts.fid else None  # a missing Inception file fails here, before any write
    model = model_of(run, state, opts.device)
    partners = prior_partners(model, opts)
    groups = load_groups(cfg, opts.data_dir, progress=opts.progress)
    sizes = [len(g.test_images) for g in groups]
    total = opts.num_samples or sum(sizes)
    counts = split_counts(total, sizes)
    digest = weights_digest(state.weights)
    swap = "|swap-same-noise" if opts.prior_swap else ""  # before: "|swap", drawn with other noise
    subset = "" if opts.test_size is None else f"|test{opts.test_size}"  # NLL depends on the test images
    tag = hashlib.sha256(f"{digest}|{counts}|{opts.pathway}{swap}{subset}|{EVAL_FORMAT}".encode()).hexdigest()[:16]
    cache = run.path / "eval" / "cache" / tag
    # the NLL depends on the weights and the test images only, not on sample counts, pathway or
    # prior swap: one cache serves every evaluation variant of the same weights
    nll_cache = (
        run.path
        / "eval"
        / "cache"
        / ("nll-" + hashlib.sha256(f"{digest}{subset}|{EVAL_FORMAT}".encode()).hexdigest()[:16])
    )
    samples = [generate(model, gi, n, cfg.seed, opts.pathway, prior_group=partners[gi]) for gi, n in enumerate(counts)]
    result: dict[str, Any] = {
        "format": EVAL_FORMAT,
        "run": str(run.path),
        "name": cfg.name,
        "mode": cfg.mode,
        "round": state.round,
        "rounds_planned": cfg.effective_rounds,
        "weights_sha256": digest,
        "pathway": opts.pathway or model.default_pathway(),
        "prior_swap": opts.prior_swap,
        "same_noise_as_unswapped": True,  # generate() draws the swap's noise from the unswapped stream
        "prior_of_group": {
            g: cfg.group_names[p] for g, p in zip(cfg.group_names, partners, strict=True) if p is not None
        },
        "num_samples": total,
        "eval_images": sum(sizes),
        "reduced": total < sum(sizes) or opts.test_size is not None,
        "test_size": opts.test_size,
        "samples_per_group": dict(zip(cfg.group_names, counts, strict=True)),
        "options": asdict(opts),
    }
    if extractor is not None:
        result["fid"] = fid_metrics(samples, groups, extractor, cache, opts)
    result["classifier"] = classifier_metrics(samples, groups, opts)
    result["collapse"] = collapse_report(
        samples, [to_uint8(g.test_images) for g in groups], cfg.group_names, result["classifier"]["pool"]
    )
    result["nll"] = (
        nll_metrics(model, groups, cfg.seed, opts, nll_cache)
        if isinstance(model, LatentVariableModel)
        else {"skipped": NLL_SKIPPED}
    )
    result["pictures"] = write_pictures(model, groups, samples, run.path / opts.result_name, cfg.seed, opts, partners)
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(run.path / f"{opts.result_name}.json", result)
    return result
