"""``fissionvae evaluate``: every metric of a trained run, defined once, written to eval.json.

Protocol (the paper's): the real reference is each group's test set (as the run's config
defines it); the model generates as many images as there are evaluation images, each group's
share from that group's prior/branch. Reported: overall FID (union of samples vs union of test
sets) and per-group FID; classifier IS and group purity / class coverage from the domain
classifier (and IS from a user-supplied TorchScript classifier when given); negative ELBO and
the importance-weighted NLL bound per group and overall. A smaller ``num_samples`` is allowed
and flagged as ``reduced`` everywhere (FID is biased upwards roughly as c/N: compare only
numbers computed with the same N).

Expensive work is cached so an interrupted evaluation resumes: Inception features in chunks
(generated ones in ``<run>/eval/cache``, real ones in the user cache), real-data statistics
keyed by dataset content and extractor identity, and per-group NLL results.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.artifacts import generation_grid
from fissionvae.data.federated import GroupData, load_groups
from fissionvae.evaluation.nll import nll_report, pooled
from fissionvae.federation.state import ServerState
from fissionvae.io import atomic_write_json, atomic_write_bytes
from fissionvae.models.vae import FissionVAE, build_model
from fissionvae.runs import RunDir, RunDirError
from fissionvae.seeding import torch_generator
from fissionvae.viz import save_grid

EVAL_FORMAT = 1


@dataclass
class EvalOptions:
    """What to compute; ``None`` sample count means the paper's protocol (as many as test images)."""

    num_samples: int | None = None
    iw_samples: int = 100
    pathway: str | None = None
    fid: bool = True
    inception: str | None = None
    is_classifier: str | None = None
    classifier_epochs: int = 2
    tsne: bool = True
    tsne_points: int = 1000
    allow_unfinished: bool = False
    data_dir: str | None = None
    progress: bool = True


# --------------------------------------------------------------------------- helpers


def weights_digest(weights: dict[str, Tensor]) -> str:
    """sha256 over the checkpoint's tensors (names, shapes, bytes): the model's identity."""
    h = hashlib.sha256()
    for key in sorted(weights):
        t = weights[key].detach().contiguous().cpu()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def split_counts(total: int, sizes: list[int]) -> list[int]:
    """Split ``total`` over groups in proportion to ``sizes`` (largest remainders; sums exactly)."""
    exact = [total * s / sum(sizes) for s in sizes]
    counts = [math.floor(e) for e in exact]
    for i in sorted(range(len(sizes)), key=lambda i: exact[i] - counts[i], reverse=True)[: total - sum(counts)]:
        counts[i] += 1
    return counts


def to_uint8(images: Tensor) -> Tensor:
    """[0, 1] floats -> uint8 with rounding (as a saved PNG would hold them)."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


@torch.inference_mode()
def generate(model: FissionVAE, group: int, n: int, seed: int, pathway: str | None, batch: int = 1000, prior_group: int | None = None) -> Tensor:
    """``n`` uint8 samples of ``group`` from the evaluation's own stream (deterministic)."""
    g = torch_generator(seed, "sample", 1000 + group, 0 if prior_group is None else 1 + prior_group)
    parts = [model.sample(group, min(batch, n - i), g, pathway, prior_group) for i in range(0, n, batch)]
    return to_uint8(torch.cat(parts)) if parts else torch.zeros(0, *model.image_shape, dtype=torch.uint8)


def cached_features(images: Tensor, extractor, folder: Path, key: str, chunk: int = 1000, desc: str = "") -> np.ndarray:
    """Inception features of ``images``, computed and saved chunk by chunk (resumable)."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in tqdm(range(0, len(images), chunk), desc=f"FID features {desc}".strip(), unit="chunk", disable=not getattr(extractor, "progress", False)):
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
        raise RunDirError(f"{run.path}: the run stopped at round {state.round} of {planned}; resume it first or pass --allow-unfinished")
    return run, state


def model_of(run: RunDir, state: ServerState) -> FissionVAE:
    cfg = run.load_config()
    model = build_model(cfg, tuple(state.extra.get("image_shape", (1, 28, 28))))
    model.load_state_dict(state.weights)
    return model.eval()


# --------------------------------------------------------------------------- metrics


def fid_metrics(samples: list[Tensor], groups: list[GroupData], extractor, cache: Path, opts: EvalOptions) -> dict:
    """Overall and per-group FID, with the real statistics cached by content + extractor."""
    from fissionvae.evaluation.fid import StatsCache, feature_stats, fid_from_stats

    stats_cache = StatsCache()
    real, fake, per_group = [], [], {}
    for gi, g in enumerate(groups):
        real_images = to_uint8(g.test_images)
        key = stats_cache.key(real_images, extractor.identity)
        r = stats_cache.load(f"{g.dataset}-test", key)
        if r is None:
            feats = cached_features(real_images, extractor, stats_cache.cache_dir / "features", key, desc=f"{g.name} test")
            r = feature_stats(feats)
            stats_cache.save(f"{g.dataset}-test", key, r)
        f = feature_stats(cached_features(samples[gi], extractor, cache / "features", hashlib.sha256(f"{cache.name}|{gi}|{extractor.identity}".encode()).hexdigest(), desc=f"{g.name} samples"))
        real.append(r)
        fake.append(f)
        per_group[g.name] = {"fid": fid_from_stats(r, f), "generated": f.n, "real": r.n}
    overall = fid_from_stats(pooled_stats(real), pooled_stats(fake))
    return {"overall": overall, "generated": sum(f.n for f in fake), "real": sum(r.n for r in real), "per_group": per_group, "extractor": extractor.identity}


def classifier_metrics(samples: list[Tensor], groups: list[GroupData], opts: EvalOptions) -> dict:
    """Domain-classifier IS, group purity and class coverage; IS from a user classifier if given."""
    from fissionvae.evaluation.classifier import group_scores, load_or_train
    from fissionvae.evaluation.inception_score import classifier_logits, inception_score

    clf = load_or_train([(g.name, to_uint8(g.train_images), g.train_labels.numpy()) for g in groups], epochs=opts.classifier_epochs, progress=opts.progress)
    pool = torch.cat(samples)
    mean, std = inception_score(clf.logits(pool), splits=10)
    out = {
        "classifier_test_accuracy": clf.accuracy([(g.name, to_uint8(g.test_images), g.test_labels.numpy()) for g in groups]),
        "is_domain": {"mean": mean, "std": std, "samples": len(pool), "splits": 10},
        "per_group": {g.name: group_scores(clf, samples[gi], gi) | {"samples": len(samples[gi])} for gi, g in enumerate(groups)},
    }
    if opts.is_classifier:
        user = torch.jit.load(opts.is_classifier, map_location="cpu").eval()
        m, s = inception_score(classifier_logits(user, pool), splits=10)
        out["is_user"] = {"mean": m, "std": s, "samples": len(pool), "classifier": str(opts.is_classifier)}
    return out


def nll_metrics(model: FissionVAE, groups: list[GroupData], seed: int, opts: EvalOptions, cache: Path) -> dict:
    """Per-group and overall negative ELBO and IW bound (per-group results cached for resume)."""
    per_group = {}
    for gi, g in enumerate(groups):
        path = cache / f"nll-{gi}-k{opts.iw_samples}.json"
        if path.is_file():
            per_group[g.name] = json.loads(path.read_text())
            continue
        per_group[g.name] = nll_report(model, g.test_images, gi, opts.iw_samples, torch_generator(seed, "eval", 10_000 + gi), progress=opts.progress)
        atomic_write_json(path, per_group[g.name])
    return {"per_group": per_group, "overall": pooled(list(per_group.values()))}


def write_pictures(model: FissionVAE, groups: list[GroupData], samples: list[Tensor], out: Path, seed: int, opts: EvalOptions) -> list[str]:
    """16x16 generation grids per group and the two t-SNE figures."""
    written = []
    for gi, g in enumerate(groups):
        path = out / f"samples_{g.name}_16x16.png"
        save_grid(generation_grid(model, gi, 256, seed, opts.pathway), path, nrow=16, scale=1)
        written.append(path.name)
    if opts.tsne:
        from fissionvae.evaluation.tsne import latent_means, plot_latent_tsne, plot_real_vs_generated_tsne

        n = opts.tsne_points
        test = torch.cat([g.test_images[:n] for g in groups])
        gids = np.concatenate([np.full(min(n, len(g.test_images)), gi) for gi, g in enumerate(groups)])
        labels = torch.cat([g.test_labels[:n] for g in groups]).numpy()
        plot_latent_tsne(latent_means(model, test), gids, labels, [g.name for g in groups], out / "tsne_latent.png", seed)
        gen = torch.cat([s[:n] for s in samples]).float() / 255
        plot_real_vs_generated_tsne(test, gen, out / "tsne_real_vs_generated.png", seed)
        written += ["tsne_latent.png", "tsne_real_vs_generated.png"]
    return written


# --------------------------------------------------------------------------- entry point


def evaluate_run(run_dir: str | Path, opts: EvalOptions | None = None) -> dict:
    """Evaluate a run folder; writes ``<run>/eval.json`` and ``<run>/eval/*.png``; returns the result."""
    opts = opts or EvalOptions()
    start = time.perf_counter()
    run, state = open_for_eval(run_dir, opts.allow_unfinished)
    cfg = run.load_config()
    extractor = _extractor(opts) if opts.fid else None  # a missing Inception file fails here, before any write
    model = model_of(run, state)
    groups = load_groups(cfg, opts.data_dir)
    sizes = [len(g.test_images) for g in groups]
    total = opts.num_samples or sum(sizes)
    counts = split_counts(total, sizes)
    digest = weights_digest(state.weights)
    tag = hashlib.sha256(f"{digest}|{counts}|{opts.pathway}|{EVAL_FORMAT}".encode()).hexdigest()[:16]
    cache = run.path / "eval" / "cache" / tag
    samples = [generate(model, gi, n, cfg.seed, opts.pathway) for gi, n in enumerate(counts)]
    result = {
        "format": EVAL_FORMAT,
        "run": str(run.path),
        "name": cfg.name,
        "mode": cfg.mode,
        "round": state.round,
        "rounds_planned": cfg.effective_rounds,
        "weights_sha256": digest,
        "pathway": opts.pathway or model.default_pathway(),
        "num_samples": total,
        "eval_images": sum(sizes),
        "reduced": total < sum(sizes),
        "samples_per_group": dict(zip(cfg.group_names, counts)),
        "options": asdict(opts),
    }
    if extractor is not None:
        result["fid"] = fid_metrics(samples, groups, extractor, cache, opts)
    result["classifier"] = classifier_metrics(samples, groups, opts)
    result["nll"] = nll_metrics(model, groups, cfg.seed, opts, cache)
    result["pictures"] = write_pictures(model, groups, samples, run.path / "eval", cfg.seed, opts)
    result["seconds"] = time.perf_counter() - start
    atomic_write_json(run.path / "eval.json", result)
    return result


def _extractor(opts: EvalOptions):
    from fissionvae.evaluation.fid import InceptionFeatures
    from fissionvae.evaluation.inception import resolve_inception_path

    return InceptionFeatures(resolve_inception_path(opts.inception), progress=opts.progress)


def summary_lines(result: dict) -> list[str]:
    """A few human-readable lines of an eval.json result."""
    flag = " (REDUCED sample count: not comparable with full-protocol numbers)" if result["reduced"] else ""
    lines = [f"{result['name']} [{result['mode']}], round {result['round']}/{result['rounds_planned']}, {result['num_samples']} generated images{flag}"]
    if "fid" in result:
        per = ", ".join(f"{k} {v['fid']:.2f}" for k, v in result["fid"]["per_group"].items())
        lines.append(f"FID overall {result['fid']['overall']:.2f} (per group: {per})")
    c = result["classifier"]
    lines.append(f"IS (domain classifier) {c['is_domain']['mean']:.2f} +- {c['is_domain']['std']:.2f}; purity " + ", ".join(f"{k} {v['purity']:.3f}" for k, v in c["per_group"].items()))
    n = result["nll"]["overall"]
    lines.append(f"NLL: -ELBO {n['neg_elbo']['nats_per_dim']:.4f} nats/dim ({n['neg_elbo']['bits_per_dim']:.4f} bits/dim), IW K={n['iw']['k']} {n['iw']['nats_per_dim']:.4f} nats/dim")
    return lines
