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
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.artifacts import generation_grid
from fissionvae.data.federated import GroupData, load_groups
from fissionvae.evaluation.collapse import collapse_report, pool_coverage
from fissionvae.evaluation.fid import FeatureExtractor
from fissionvae.evaluation.nll import nll_report, pooled
from fissionvae.evaluation.runtimes import RUNTIME_CHOICES, feature_extractor
from fissionvae.evaluation.shares import split_counts
from fissionvae.federation.state import ServerState
from fissionvae.io import atomic_write_bytes, atomic_write_json
from fissionvae.models.vae import FissionVAE, build_model
from fissionvae.runs import RunDir, RunDirError
from fissionvae.seeding import torch_generator
from fissionvae.viz import save_grid

EVAL_FORMAT = 1
NLL_SKIPPED = "a GAN defines no likelihood p(x): there is no ELBO or importance-weighted bound to compute"


@dataclass
class EvalOptions:
    """What to compute; ``None`` sample count means the paper's protocol (as many as test images)."""

    num_samples: int | None = None
    iw_samples: int = 100
    pathway: str | None = None
    fid: bool = True
    inception: str | None = None
    # which runtime computes the FID features: auto (OpenVINO, else ONNX Runtime, else torch on
    # the CPU; torch on a GPU), torch, openvino or onnx; every fp32 runtime gives the same numbers
    fid_runtime: str = "auto"
    # bf16 FID features (OpenVINO's bf16 hint, or torch autocast): a quick look only; moves FID by
    # about 1, cached apart from fp32 and marked "paper_comparable": false in eval.json
    fid_bf16: bool = False
    is_classifier: str | None = None
    classifier_epochs: int = 2
    tsne: bool = True
    tsne_points: int = 1000
    allow_unfinished: bool = False
    data_dir: str | None = None
    progress: bool = True
    device: str = "cpu"  # the VAE (sampling, NLL, latents) and the Inception network run here
    # Fig. 10's prior swap: group g's samples draw z1 from group (g + 1) mod k's prior and decode
    # with g's own branch (two groups: the priors swapped). Needs a pathway that samples z1.
    prior_swap: bool = False
    # where the result goes: <run>/<result_name>.json and pictures in <run>/<result_name>/, so
    # evaluations of several pathways (or a prior swap) of one run live side by side
    result_name: str = "eval"
    # evaluate against a seeded subset of this many test images per group (the rule of
    # data.groups.*.test_size, so 2,000 gives the subsets of configs/mixed_mnist/quick.yaml);
    # a reduced protocol, flagged as such
    test_size: int | None = None


# --------------------------------------------------------------------------- helpers


def weights_digest(weights: dict[str, Tensor]) -> str:
    """sha256 over the checkpoint's tensors (names, shapes, bytes): the model's identity."""
    h = hashlib.sha256()
    for key in sorted(weights):
        t = weights[key].detach().contiguous().cpu()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 with rounding (as a saved PNG would hold them)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.inference_mode()
def generate(
    model: FissionVAE,
    group: int,
    n: int,
    seed: int,
    pathway: str | None,
    batch: int = 1000,
    prior_group: int | None = None,
) -> Tensor:
    """``n`` uint8 samples of ``group`` from the evaluation's own stream (deterministic)."""
    g = torch_generator(seed, "sample", 1000 + group, 0 if prior_group is None else 1 + prior_group)
    parts = [model.sample(group, min(batch, n - i), g, pathway, prior_group).cpu() for i in range(0, n, batch)]
    return to_uint8(torch.cat(parts)) if parts else torch.zeros(0, *model.image_shape, dtype=torch.uint8)


def cached_features(
    images: Tensor, extractor: FeatureExtractor, folder: Path, key: str, chunk: int = 1000, desc: str = ""
) -> np.ndarray:
    """Inception features of ``images``, computed and saved chunk by chunk (resumable)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in tqdm(
        range(0, len(images), chunk),
        desc=f"FID features {desc}".strip(),
        unit="chunk",
        disable=not getattr(extractor, "progress", False),
    ):
        path = folder / f"{key[:24]}-{i // chunk:05d}.npy"
        if path.is_file():
            parts.append(np.load(path))
            continue
        feats = extractor(images[i : i + chunk]).astype(np.float32)
        atomic_write_bytes(path, _npy_bytes(feats))
        parts.append(feats)
    return np.concatenate(parts).astype(np.float64)


def pooled_stats(parts: list):
    """Exact mean and (ddof = 1) covariance of the union of several feature sets, from their stats."""
    from fissionvae.evaluation.fid import FeatureStats

    n = sum(p.n for p in parts)
    mu = sum(p.n * p.mu for p in parts) / n
    scatter = sum((p.n - 1) * p.sigma + p.n * np.outer(p.mu - mu, p.mu - mu) for p in parts)
    return FeatureStats(mu, scatter / (n - 1), n)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# --------------------------------------------------------------------------- loading


def open_for_eval(run_dir: str | Path, allow_unfinished: bool) -> tuple[RunDir, ServerState]:
    """The run and its checkpoint, or a clear error (nothing is written before this passes)."""
    run = RunDir.open(run_dir)
    state = run.load_state()
    status = json.loads(run.status_path.read_text()) if run.status_path.is_file() else {}
    planned = status.get("rounds_planned")
    if planned is None:
        raise RunDirError(f"{run.path}: no status.json; the run folder is incomplete")
    if state.round < planned and not allow_unfinished:
        raise RunDirError(
            f"{run.path}: the run stopped at round {state.round} of {planned}; resume it first or pass --allow-unfinished"
        )
    return run, state


def model_of(run: RunDir, state: ServerState, device: str = "cpu") -> FissionVAE:
    cfg = run.load_config()
    model = build_model(cfg, tuple(state.extra.get("image_shape", (1, 28, 28))))
    model.load_state_dict(state.weights)
    return model.to(device).eval()


# --------------------------------------------------------------------------- metrics


def fid_metrics(
    samples: list[Tensor], groups: list[GroupData], extractor: FeatureExtractor, cache: Path, opts: EvalOptions
) -> dict:
    """Overall and per-group FID, with the real statistics cached by content + extractor."""
    from fissionvae.evaluation.fid import StatsCache, feature_stats, fid_from_stats

    stats_cache = StatsCache()
    real, fake, per_group = [], [], {}
    for gi, g in enumerate(groups):
        real_images = to_uint8(g.test_images)
        key = stats_cache.key(real_images, extractor.identity)
        r = stats_cache.load(f"{g.dataset}-test", key)
        if r is None:
            feats = cached_features(
                real_images, extractor, stats_cache.cache_dir / "features", key, desc=f"{g.name} test"
            )
            r = feature_stats(feats)
            stats_cache.save(f"{g.dataset}-test", key, r)
        f = feature_stats(
            cached_features(
                samples[gi],
                extractor,
                cache / "features",
                hashlib.sha256(f"{cache.name}|{gi}|{extractor.identity}".encode()).hexdigest(),
                desc=f"{g.name} samples",
            )
        )
        real.append(r)
        fake.append(f)
        per_group[g.name] = {"fid": fid_from_stats(r, f), "generated": f.n, "real": r.n}
    overall = fid_from_stats(pooled_stats(real), pooled_stats(fake))
    return {
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


def nll_metrics(model: FissionVAE, groups: list[GroupData], seed: int, opts: EvalOptions, cache: Path) -> dict:
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


def prior_partners(model: FissionVAE, opts: EvalOptions) -> list[int | None]:
    """Per group, the group whose z1 prior its samples draw from (None: its own; see ``prior_swap``)."""
    k = model.num_groups
    if not opts.prior_swap:
        return [None] * k
    if model.kind != "vae":
        raise ValueError(f"prior_swap: a {model.kind} model has no group priors to swap")
    pathway = opts.pathway or model.default_pathway()
    if k < 2 or pathway == "z2" or not model.has_fixed_prior:
        raise ValueError(
            "prior_swap needs two or more groups, fixed z1 priors and a pathway that samples z1 from them "
            f"('z1-z2-z1' or 'z1'); got {k} group(s), prior {model.cfg.prior!r}, pathway {pathway!r}"
        )
    return [(g + 1) % k for g in range(k)]


def write_pictures(
    model: FissionVAE,
    groups: list[GroupData],
    samples: list[Tensor],
    out: Path,
    seed: int,
    opts: EvalOptions,
    partners: list[int | None] | None = None,
) -> list[str]:
    """16x16 generation grids per group and the two t-SNE figures."""
    written = []
    partners = partners or [None] * len(groups)
    for gi, g in enumerate(groups):
        path = out / f"samples_{g.name}_16x16.png"
        save_grid(generation_grid(model, gi, 256, seed, opts.pathway, partners[gi]), path, nrow=16, scale=1)
        written.append(path.name)
    if opts.tsne:
        from fissionvae.evaluation.tsne import latent_means, plot_latent_tsne, plot_real_vs_generated_tsne

        n = opts.tsne_points
        test = torch.cat([g.test_images[:n] for g in groups])
        if model.kind == "vae":  # a GAN has no encoder, hence no latent means
            gids = np.concatenate([np.full(min(n, len(g.test_images)), gi) for gi, g in enumerate(groups)])
            labels = torch.cat([g.test_labels[:n] for g in groups]).numpy()
            plot_latent_tsne(
                latent_means(model, test), gids, labels, [g.name for g in groups], out / "tsne_latent.png", seed
            )
            written.append("tsne_latent.png")
        gen = torch.cat([s[:n] for s in samples]).float() / 255
        plot_real_vs_generated_tsne(test, gen, out / "tsne_real_vs_generated.png", seed)
        written.append("tsne_real_vs_generated.png")
    return written


# --------------------------------------------------------------------------- entry point


def evaluate_run(run_dir: str | Path, opts: EvalOptions | None = None) -> dict:
    """Evaluate a run folder; writes ``<run>/eval.json`` and ``<run>/eval/*.png``; returns the result.

    (``<run>/<opts.result_name>.json`` and ``<run>/<opts.result_name>/`` when that is not ``eval``.)
    """
    opts = opts or EvalOptions()
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", opts.result_name):
        raise ValueError(
            f"result_name {opts.result_name!r}: use letters, digits, '_', '.' and '-' only (it names a file in the run folder)"
        )
    if opts.fid_runtime not in RUNTIME_CHOICES:
        raise ValueError(f"fid_runtime {opts.fid_runtime!r}: choose one of {', '.join(RUNTIME_CHOICES)}")
    start = time.perf_counter()
    run, state = open_for_eval(run_dir, opts.allow_unfinished)
    cfg = run.load_config()
    if opts.test_size is not None:
        cfg = run.load_config([f"data.groups.{i}.test_size={opts.test_size}" for i in range(len(cfg.data.groups))])
    extractor = _extractor(opts) if opts.fid else None  # a missing Inception file fails here, before any write
    model = model_of(run, state, opts.device)
    partners = prior_partners(model, opts)
    groups = load_groups(cfg, opts.data_dir)
    sizes = [len(g.test_images) for g in groups]
    total = opts.num_samples or sum(sizes)
    counts = split_counts(total, sizes)
    digest = weights_digest(state.weights)
    swap = "|swap" if opts.prior_swap else ""
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
    result = {
        "format": EVAL_FORMAT,
        "run": str(run.path),
        "name": cfg.name,
        "mode": cfg.mode,
        "round": state.round,
        "rounds_planned": cfg.effective_rounds,
        "weights_sha256": digest,
        "pathway": opts.pathway or model.default_pathway(),
        "prior_swap": opts.prior_swap,
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
        nll_metrics(model, groups, cfg.seed, opts, nll_cache) if model.kind == "vae" else {"skipped": NLL_SKIPPED}
    )
    result["pictures"] = write_pictures(model, groups, samples, run.path / opts.result_name, cfg.seed, opts, partners)
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(run.path / f"{opts.result_name}.json", result)
    return result


def _extractor(opts: EvalOptions) -> FeatureExtractor:
    return feature_extractor(
        opts.fid_runtime, opts.inception, device=opts.device, bf16=opts.fid_bf16, progress=opts.progress
    )


def summary_lines(result: dict) -> list[str]:
    """A few human-readable lines of an eval.json result."""
    subset = f", test subset of {result['test_size']} per group" if result.get("test_size") else ""
    flag = f" (REDUCED sample count{subset}: not comparable with full-protocol numbers)" if result["reduced"] else ""
    lines = [
        f"{result['name']} [{result['mode']}], round {result['round']}/{result['rounds_planned']}, {result['num_samples']} generated images{flag}"
    ]
    if "fid" in result:
        per = ", ".join(f"{k} {v['fid']:.2f}" for k, v in result["fid"]["per_group"].items())
        quick = "" if result["fid"].get("paper_comparable", True) else " [bf16 features: a quick look, not comparable]"
        lines.append(f"FID overall {result['fid']['overall']:.2f} (per group: {per}){quick}")
    c = result["classifier"]
    lines.append(
        f"IS (domain classifier) {c['is_domain']['mean']:.2f} +- {c['is_domain']['std']:.2f}; purity "
        + ", ".join(f"{k} {v['purity']:.3f}" for k, v in c["per_group"].items())
    )
    coll = result.get("collapse")
    if coll:
        verdict = "COLLAPSED (" + "; ".join(coll["reasons"]) + ")" if coll["collapsed"] else "not collapsed"
        lines.append(
            f"mode collapse: {verdict}; near-duplicates {coll['near_duplicates']['share']:.3f} of {coll['near_duplicates']['images']} (real {coll['near_duplicates'].get('real_share', float('nan')):.3f}), class coverage {coll['coverage']['coverage_entropy_normalised']:.3f}, {coll['coverage']['classes_covered']}/{coll['coverage']['classes']} classes"
        )
    if "skipped" in result["nll"]:
        lines.append(f"NLL: skipped ({result['nll']['skipped']})")
        return lines
    n = result["nll"]["overall"]
    lines.append(
        f"NLL: -ELBO {n['neg_elbo']['nats_per_dim']:.4f} nats/dim ({n['neg_elbo']['bits_per_dim']:.4f} bits/dim), IW K={n['iw']['k']} {n['iw']['nats_per_dim']:.4f} nats/dim"
    )
    return lines
