"""The Dugdale (2023) study: a conv VAE on MNIST, FedAvg over 4 IID clients vs centralised.

:func:`run_dugdale_study` trains both runs of a preset (or reuses / resumes them, see
:mod:`fissionvae.studies.common`), evaluates both with the project's evaluation (FID, domain
classifier scores, NLL), and writes one figure page ``<out>/dugdale.md`` with

* Figure 1: the same 30 test inputs beside their centralised and federated reconstructions;
* Figure 2: 256 generations of each model, from the same 256 latent draws z ~ N(0, I);
* Figure 3: train and test loss terms (reconstruction, KL, total) of both runs, overlaid on
  one x axis: passes over the training set;
* Figure 4: one t-SNE of test images and both models' generations (not reconstructions);
* a table of FID, classifier IS / class coverage / confident share and NLL with every sample
  count, noise half-width, rounds and wall times, the mean-image floor, and a noise-aware verdict
  sentence (:mod:`fissionvae.studies.dugdale_verdict`).

The numbers are also written to ``<out>/dugdale.json``. Presets (:data:`PRESETS`) pair a
federated and a centralised config file of ``configs/dugdale/``. The pieces: presets
(``dugdale_presets``), numbers and floor (``dugdale_numbers``), verdict (``dugdale_verdict``),
figures (``dugdale_figures``), page text (``dugdale_page``); this module runs them in order.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from fissionvae.api import load_run
from fissionvae.data.federated import GroupData, load_groups
from fissionvae.evaluation.evaluate import EvalOptions, generate
from fissionvae.evaluation.inception import resolve_inception_path
from fissionvae.io import atomic_write_json, atomic_write_text
from fissionvae.models.vae import FissionVAE
from fissionvae.studies.common import ensure_evaluated, ensure_trained, load_study_config
from fissionvae.studies.dugdale_figures import draw_figures
from fissionvae.studies.dugdale_numbers import classifier_for, floor_numbers, run_numbers, softmax
from fissionvae.studies.dugdale_page import page_markdown, study_command
from fissionvae.studies.dugdale_presets import (
    CONFIGS_DIR,
    LABELS,
    MODES,
    PRESETS,
    StudyPreset,
    StudyRun,
    resolve_preset,
)
from fissionvae.studies.dugdale_verdict import FID_TOLERANCE, NLL_TOLERANCE, verdict, verdict_sentence
from fissionvae.studies.figures import loss_curve

__all__ = [
    "CONFIGS_DIR",
    "FID_TOLERANCE",
    "NLL_TOLERANCE",
    "PRESETS",
    "resolve_preset",
    "run_dugdale_study",
    "verdict",
]


def _eval_options(
    p: StudyPreset, num_samples: int | None, iw_samples: int | None, data_dir, progress: bool, device: str = "cpu"
) -> EvalOptions:
    return EvalOptions(
        num_samples=num_samples if num_samples is not None else p.num_samples,
        iw_samples=iw_samples if iw_samples is not None else p.iw_samples,
        tsne=False,  # Figure 4 embeds both models' generations together instead
        data_dir=None if data_dir is None else str(data_dir),
        progress=progress,
        device=device,
    )


def train_and_evaluate(
    p: StudyPreset, configs_dir: Path, runs_dir: Path, data_dir, opts: EvalOptions, bar: tqdm
) -> dict[str, StudyRun]:
    """Both runs of the preset, trained (or reused / resumed) and evaluated (or reused)."""
    runs = {}
    for mode in MODES:
        cfg = load_study_config(configs_dir / getattr(p, mode))
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=opts.device))
        bar.set_postfix_str(f"training {LABELS[mode]}")
        run = ensure_trained(cfg, runs_dir, data_dir, opts.progress)
        bar.update()
        bar.set_postfix_str(f"evaluating {LABELS[mode]}")
        result = ensure_evaluated(run, opts)
        bar.update()
        model = load_run(run.path)[0]
        assert isinstance(model, FissionVAE), "the Dugdale study trains VAEs"
        runs[mode] = StudyRun(cfg, run, result, model)
    return runs


def generations_and_probs(
    runs: dict[str, StudyRun], groups: list[GroupData], opts: EvalOptions
) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """Each model's evaluation sample set (regenerated, identical to evaluate's) and its class probabilities."""
    clf = classifier_for(groups, opts)
    images, probs = {}, {}
    for mode, sr in runs.items():
        images[mode] = generate(sr.model, 0, sr.result["num_samples"], sr.cfg.seed, opts.pathway)
        probs[mode] = softmax(clf.logits(images[mode]))
    return images, probs


def run_dugdale_study(
    out_dir: str | Path | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    quick: bool = False,
    num_samples: int | None = None,
    progress: bool = True,
    *,
    preset: str | None = None,
    iw_samples: int | None = None,
    configs_dir: str | Path | None = None,
    device: str = "cpu",
) -> Path:
    """Train, evaluate and draw the Dugdale study; return the figure page's path.

    Parameters
    ----------
    out_dir
        Folder of the figure page (``dugdale.md``, ``dugdale.json`` and four PNGs); default
        ``<runs_dir>/study-dugdale-<preset>``.
    runs_dir
        Where the two run folders are found (reused when finished, resumed when stopped) or created.
    data_dir
        Folder with ``mnist/`` (None: the config's, ``$FISSIONVAE_DATA_DIR`` or the cache).
    quick
        Use the ``quick`` preset (small subset, few rounds; minutes on a CPU).
    num_samples
        Generated images per model for FID and classifier scores (None: the preset's; the full
        preset uses as many as test images).
    progress
        Show progress bars.
    preset
        ``full`` (the paper's settings), ``reduced`` or ``quick``; overrides ``quick``.
    iw_samples
        K of the importance-weighted NLL bound (None: the preset's).
    configs_dir
        Folder of the Dugdale config files (default: the repository's ``configs/dugdale``).
    device
        Where training, sampling, NLL and Inception run (``cpu`` or ``cuda``); run identity
        and reuse do not depend on it.

    Returns
    -------
    Path
        ``<out_dir>/dugdale.md``.
    """
    start = time.perf_counter()
    name = resolve_preset(quick, preset)
    p, runs_dir = PRESETS[name], Path(runs_dir)
    out = Path(out_dir) if out_dir is not None else runs_dir / f"study-dugdale-{name}"
    opts = _eval_options(p, num_samples, iw_samples, data_dir, progress, device)
    if opts.fid:
        resolve_inception_path(opts.inception)  # missing: say so now, not after the training
    with tqdm(total=5, desc="dugdale study", unit="step", disable=not progress) as bar:
        runs = train_and_evaluate(p, Path(configs_dir) if configs_dir else CONFIGS_DIR, runs_dir, data_dir, opts, bar)
        bar.set_postfix_str("figures")
        page = write_study_page(out, name, runs, opts, data_dir, start)
        bar.update()
    return page


def write_study_page(
    out: Path, preset: str, runs: dict[str, StudyRun], opts: EvalOptions, data_dir, start: float
) -> Path:
    """Figures, ``dugdale.json`` and ``dugdale.md`` of two evaluated runs; returns the page."""
    tsne_points = PRESETS[preset].tsne_points
    groups = load_groups(runs["federated"].cfg, data_dir)
    images, probs = generations_and_probs(runs, groups, opts)
    train_images = len(groups[0].train_images)
    curves = {m: loss_curve(runs[m].run.metrics(), runs[m].epochs_per_round, train_images) for m in MODES}
    smoke = PRESETS[preset].smoke_test
    tsne = {
        "test": min(tsne_points, len(groups[0].test_images)),
        "generated": min(tsne_points, *(len(x) for x in images.values())),
    }
    figures = draw_figures(out, runs, groups[0], images, probs, curves, tsne)
    reps = PRESETS[preset].bootstrap_reps
    numbers: dict[str, dict] = {m: run_numbers(runs[m], curves[m], groups, probs[m], reps) for m in MODES}
    numbers["floor"] = floor_numbers(groups[0])
    v = verdict(numbers)
    command = study_command(preset, opts)
    summary = {
        "preset": preset,
        "command": command,
        "verdict": v,
        "smoke_test": smoke,
        "sentence": verdict_sentence(v, numbers, smoke),
        "tsne_points": tsne,
    }
    atomic_write_json(out / "dugdale.json", summary | numbers | {"study_seconds": time.perf_counter() - start})
    return atomic_write_text(out / "dugdale.md", page_markdown(command, preset, runs, numbers, v, figures, tsne))
