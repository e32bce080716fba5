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
  count, rounds, wall times, and a verdict sentence by the stated criterion
  (:data:`FID_TOLERANCE`, :data:`NLL_TOLERANCE`).

The numbers are also written to ``<out>/dugdale.json``. Presets (:data:`PRESETS`) pair a
federated and a centralised config file of ``configs/dugdale/``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from fissionvae.api import load_run
from fissionvae.artifacts import generation_grid
from fissionvae.config import RunConfig
from fissionvae.data.federated import GroupData, load_groups
from fissionvae.evaluation.evaluate import EvalOptions, generate, to_uint8
from fissionvae.evaluation.report import _md_table
from fissionvae.io import atomic_write_json, atomic_write_text
from fissionvae.models.vae import FissionVAE
from fissionvae.runs import RunDir
from fissionvae.studies.common import (
    ensure_evaluated,
    ensure_trained,
    load_study_config,
    read_status,
)
from fissionvae.studies.figures import (
    LossCurve,
    grids_side_by_side,
    loss_curve,
    plot_joint_tsne,
    plot_loss_overlay,
)

if TYPE_CHECKING:
    from fissionvae.evaluation.classifier import DomainClassifier

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs" / "dugdale"
MODES = ("centralized", "federated")
LABELS = {"centralized": "centralised", "federated": "federated"}
FID_TOLERANCE = 0.10  # federated FID may exceed centralised FID by at most 10% ...
NLL_TOLERANCE = 0.02  # ... and its negative ELBO by at most 2%, to count as a match
CONFIDENT = 0.9  # "confident share": samples whose top class probability is at least this
RECON_INPUTS = 30
GENERATIONS = 256


@dataclass(frozen=True)
class StudyPreset:
    """A pair of config files and the evaluation sizes that go with them.

    Attributes
    ----------
    federated, centralized
        Config file names in ``configs/dugdale/``.
    num_samples
        Generated images per model for FID and the classifier scores (None: as many as test
        images, the full protocol).
    iw_samples
        K of the importance-weighted NLL bound.
    tsne_points
        Test images and generations per model in Figure 4.
    """

    federated: str
    centralized: str
    num_samples: int | None
    iw_samples: int
    tsne_points: int


PRESETS = {
    "full": StudyPreset("federated.yaml", "centralized.yaml", None, 100, 1000),
    "reduced": StudyPreset("reduced.yaml", "reduced-centralized.yaml", 500, 10, 500),
    "quick": StudyPreset("quick.yaml", "quick-centralized.yaml", 100, 5, 100),
}


@dataclass
class StudyRun:
    """One trained and evaluated run of the study."""

    cfg: RunConfig
    run: RunDir
    result: dict  # eval.json
    model: FissionVAE

    @property
    def epochs_per_round(self) -> int:
        return 1 if self.cfg.mode == "centralized" else self.cfg.train.local_epochs

    def schedule(self) -> str:
        """'25 epochs, 1 client' or '15 rounds x 6 local epochs, 4 clients'."""
        t = self.cfg.train
        if self.cfg.mode == "centralized":
            return f"{_count(t.centralized_epochs, 'epoch')}, 1 client"
        clients = sum(g.clients for g in self.cfg.data.groups)
        return f"{_count(t.rounds, 'round')} x {_count(t.local_epochs, 'local epoch')}, {_count(clients, 'client')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def resolve_preset(quick: bool, preset: str | None) -> str:
    """The preset name from ``--quick`` / ``--preset`` (they must agree)."""
    name = preset or ("quick" if quick else "full")
    if name not in PRESETS:
        raise ValueError(f"unknown Dugdale preset {name!r}; choose one of {sorted(PRESETS)}")
    if quick and name != "quick":
        raise ValueError(f"--quick contradicts --preset {name}")
    return name


# --------------------------------------------------------------------------- numbers


def classifier_for(groups: list[GroupData], opts: EvalOptions) -> DomainClassifier:
    """The evaluation's domain classifier (loaded from its cache; trained there if absent)."""
    from fissionvae.evaluation.classifier import load_or_train

    return load_or_train(
        [(g.name, to_uint8(g.train_images), g.train_labels.numpy()) for g in groups],
        epochs=opts.classifier_epochs,
        progress=opts.progress,
    )


def confident_share(probs: np.ndarray, threshold: float = CONFIDENT) -> float:
    """Share of rows whose largest class probability is at least ``threshold``."""
    return float((probs.max(axis=1) >= threshold).mean())


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def run_numbers(sr: StudyRun, curve: LossCurve, train_images: int, probs: np.ndarray) -> dict:
    """The table's numbers of one run (all sample counts included)."""
    r, status = sr.result, read_status(sr.run)
    group = sr.cfg.data.groups[0].name
    nll = r["nll"]["overall"]
    cls = r["classifier"]
    out = {
        "run": str(sr.run.path),
        "schedule": sr.schedule(),
        "rounds_done": r["round"],
        "train_images": train_images,
        "passes": float(curve.x_end[-1]),
        "images_processed": round(float(curve.x_end[-1]) * train_images),
        "train_wall_seconds": status.get("wall_seconds"),
        "eval_seconds": r["seconds"],
        "generated": r["num_samples"],
        "reduced": r["reduced"],
        "is_mean": cls["is_domain"]["mean"],
        "is_std": cls["is_domain"]["std"],
        "coverage": cls["per_group"][group]["coverage_entropy_normalised"],
        "confident_share": confident_share(probs),
        "classifier_test_accuracy": cls["classifier_test_accuracy"],
        "neg_elbo": nll["neg_elbo"]["nats_per_image"],
        "neg_elbo_bits_per_dim": nll["neg_elbo"]["bits_per_dim"],
        "iw_nll": nll["iw"]["nats_per_image"],
        "iw_k": nll["iw"]["k"],
        "nll_images": nll["images"],
        "final_test_recon": float(curve.test["recon"][-1]),
        "final_test_kl": float(curve.test["kl_prior"][-1]),
    }
    if "fid" in r:
        out |= {"fid": r["fid"]["overall"], "fid_generated": r["fid"]["generated"], "fid_real": r["fid"]["real"]}
    return out


def verdict(numbers: dict[str, dict]) -> dict:
    """Whether federated matched centralised: FID and -ELBO within the stated tolerances.

    Lower is better for both; a federated model better than the centralised one matches.
    """
    c, f = numbers["centralized"], numbers["federated"]
    nll_rel = f["neg_elbo"] / c["neg_elbo"] - 1
    fid_rel = f["fid"] / c["fid"] - 1 if "fid" in c and "fid" in f else None
    matched = nll_rel <= NLL_TOLERANCE and (fid_rel is None or fid_rel <= FID_TOLERANCE)
    return {
        "matched": matched,
        "fid_relative": fid_rel,
        "neg_elbo_relative": nll_rel,
        "fid_tolerance": FID_TOLERANCE,
        "nll_tolerance": NLL_TOLERANCE,
    }


def verdict_sentence(v: dict, numbers: dict[str, dict]) -> str:
    """One plain sentence with the criterion and the two comparisons."""
    c, f = numbers["centralized"], numbers["federated"]
    head = (
        "The federated model matched the centralised one"
        if v["matched"]
        else "The federated model did not match the centralised one"
    )
    parts = []
    if v["fid_relative"] is not None:
        parts.append(f"FID {f['fid']:.2f} vs {c['fid']:.2f} ({v['fid_relative']:+.1%})")
    parts.append(f"-ELBO {f['neg_elbo']:.2f} vs {c['neg_elbo']:.2f} nats/image ({v['neg_elbo_relative']:+.1%})")
    criterion = f"criterion: federated FID at most {FID_TOLERANCE:.0%} and federated -ELBO at most {NLL_TOLERANCE:.0%} above the centralised values"
    return f"{head}: {'; '.join(parts)} ({criterion})."


# --------------------------------------------------------------------------- figures


def figure_reconstructions(runs: dict[str, StudyRun], test: torch.Tensor, path: Path) -> Path:
    """Figure 1: the first 30 test inputs, then each model's reconstructions of them."""
    x = test[:RECON_INPUTS]
    gids = torch.zeros(len(x), dtype=torch.int64)
    panels = [("test inputs", x)] + [(f"{LABELS[m]} VAE", runs[m].model.reconstruct(x, gids)) for m in MODES]
    return grids_side_by_side(panels, nrow=6, path=path)


def figure_generations(runs: dict[str, StudyRun], path: Path) -> Path:
    """Figure 2: 256 generations per model from the same latent draws (the run seed's stream)."""
    panels = [(f"{LABELS[m]} VAE", generation_grid(runs[m].model, 0, GENERATIONS, runs[m].cfg.seed)) for m in MODES]
    return grids_side_by_side(panels, nrow=16, path=path, pixels_per_inch=110.0)


def figure_tsne(
    test: torch.Tensor, labels: np.ndarray, generated: dict[str, tuple[torch.Tensor, np.ndarray]], path: Path, seed: int
) -> Path:
    """Figure 4: t-SNE of test images and of each model's generations, one shared embedding."""
    return plot_joint_tsne(test, labels, {f"{LABELS[m]} generations": generated[m] for m in MODES}, path, seed)


# --------------------------------------------------------------------------- page


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x + 0.0, spec)  # + 0.0: no "-0.000"


def _rel(f: float | None, c: float | None) -> str:
    return "-" if f is None or c is None else f"{f / c - 1:+.1%}"


def numbers_table(numbers: dict[str, dict]) -> str:
    """The Markdown table: one row per quantity, columns centralised, federated, relative."""
    c, f = numbers["centralized"], numbers["federated"]

    def row(label: str, key: str, spec: str = ".2f", relative: bool = False) -> list[str]:
        return [label, _fmt(c.get(key), spec), _fmt(f.get(key), spec), _rel(f.get(key), c.get(key)) if relative else ""]

    rows = [
        ["schedule", c["schedule"], f["schedule"], ""],
        [
            f"images processed (passes over {c['train_images']:,} training images)",
            f"{c['images_processed']:,} ({c['passes']:.1f})",
            f"{f['images_processed']:,} ({f['passes']:.1f})",
            "",
        ],
        [
            "training wall time, s (sum of round times)",
            _fmt(c["train_wall_seconds"], ".0f"),
            _fmt(f["train_wall_seconds"], ".0f"),
            "",
        ],
        ["evaluation wall time, s", _fmt(c["eval_seconds"], ".0f"), _fmt(f["eval_seconds"], ".0f"), ""],
        row(
            f"FID, lower is better ({c.get('fid_generated', '-')} generated vs {c.get('fid_real', '-')} test images)",
            "fid",
            relative=True,
        ),
        [
            f"IS, MNIST digit classifier, higher is better ({c['generated']} generated, 10 splits)",
            f"{c['is_mean']:.2f} ± {c['is_std']:.2f}",
            f"{f['is_mean']:.2f} ± {f['is_std']:.2f}",
            _rel(f["is_mean"], c["is_mean"]),
        ],
        row(f"class coverage: entropy of predicted digits / ln 10 ({c['generated']} generated)", "coverage", ".3f"),
        row(
            f"confident share: top class probability >= {CONFIDENT} ({c['generated']} generated)",
            "confident_share",
            ".3f",
        ),
        row(f"-ELBO, nats/image, lower is better ({c['nll_images']} test images)", "neg_elbo", relative=True),
        row("-ELBO, bits/dim", "neg_elbo_bits_per_dim", ".4f"),
        row(
            f"importance-weighted NLL bound, K={c['iw_k']}, nats/image ({c['nll_images']} test images)",
            "iw_nll",
            relative=True,
        ),
        row("last round's test reconstruction term, nats/image", "final_test_recon"),
        row("last round's test KL term, nats/image", "final_test_kl"),
    ]
    return _md_table(["", "centralised", "federated", "federated vs centralised"], rows)


def study_command(preset: str, opts: EvalOptions) -> str:
    """The ``fissionvae study dugdale`` command line that computes these numbers."""
    p = PRESETS[preset]
    args = [] if preset == "full" else [f"--preset {preset}"]
    args += [] if opts.num_samples == p.num_samples else [f"--num-samples {opts.num_samples}"]
    args += [] if opts.iw_samples == p.iw_samples else [f"--iw-samples {opts.iw_samples}"]
    return " ".join(["fissionvae study dugdale", *args])


def page_markdown(
    command: str,
    runs: dict[str, StudyRun],
    numbers: dict[str, dict],
    v: dict,
    figures: dict[str, str],
    tsne: dict[str, int],
) -> str:
    """The figure page: verdict, numbers table, notes, four figures, settings."""
    head = [
        "# Dugdale (2023): federated vs centralised conv VAE on MNIST\n",
        f"Written by `{command}`; runs `{runs['centralized'].run.path}` (centralised) and `{runs['federated'].run.path}` (federated).\n",
        f"**{verdict_sentence(v, numbers)}**\n",
        "## Numbers\n",
        numbers_table(numbers),
    ]
    lines = (
        head
        + _number_notes(numbers["centralized"])
        + _figure_sections(runs["federated"].cfg, figures, tsne)
        + _settings_notes(runs["federated"].cfg)
    )
    return "\n".join(lines) + "\n"


def _number_notes(c: dict) -> list[str]:
    """What the table's numbers are, with their sample counts."""
    reduced = " (REDUCED sample count: compare only with numbers of the same count)" if c["reduced"] else ""
    return [
        (
            f"- FID: TF-ported FID Inception-v3, {c.get('fid_generated', '-')} generated images per model vs {c.get('fid_real', '-')} "
            f"test images{reduced}. FID is biased upwards at small counts (about c/N)."
        ),
        (
            "- Classifier scores: the evaluation's domain classifier, which for a single MNIST group is a 10-class digit CNN "
            f"(test accuracy {c['classifier_test_accuracy']:.3f}). Its IS is on a 10-class scale, not the ImageNet Inception's. "
            "Group purity is trivially 1 with one group, so we report class coverage (how evenly the digits are generated) and the "
            f"confident share (how many generations the classifier recognises with probability >= {CONFIDENT})."
        ),
        (
            f"- NLL: negative ELBO (one z sample per image) and the importance-weighted bound with K={c['iw_k']}, "
            f"on {c['nll_images']} test images; Bernoulli likelihood on grey levels."
        ),
        (
            "- Wall times are measured on whatever machine ran the study (shared CPUs slow everything down); "
            "training time sums the rounds, without per-round test loss and checkpointing.\n"
        ),
    ]


def _figure_sections(cfg: RunConfig, figures: dict[str, str], tsne: dict[str, int]) -> list[str]:
    """Captions and image links of Figures 1-4."""
    return [
        "## Figure 1: reconstructions\n",
        (
            f"The first {RECON_INPUTS} test images (left) and their reconstructions by the centralised (middle) and federated (right) "
            "model (mean of p(x|z) at z = mean of q(z|x)).\n"
        ),
        f"![Figure 1]({figures['reconstructions']})\n",
        "## Figure 2: generations\n",
        (
            f"{GENERATIONS} generations per model (mean of p(x|z)), decoded from the same {GENERATIONS} draws z ~ N(0, I): "
            "centralised left, federated right.\n"
        ),
        f"![Figure 2]({figures['generations']})\n",
        "## Figure 3: loss curves\n",
        (
            "Reconstruction (BCE), KL and total loss per image, both runs on one axis: passes over the training set (one centralised "
            "epoch = 1; one federated round = local epochs x all clients' data). Solid: training loss, the mean over the round "
            f"(drawn at its middle); dashed: the test subset after the round, in eval mode ({cfg.eval.test_per_group} test images at most).\n"
        ),
        f"![Figure 3]({figures['losses']})\n",
        "## Figure 4: t-SNE of test images and generations\n",
        (
            f"One t-SNE embedding (after PCA to 50 dimensions) of the first {tsne['test']} test images and of {tsne['generated']} "
            "generations per model (generations, not reconstructions). Left: test images by label; middle and right: test images "
            "in grey, a model's generations coloured by the digit the classifier predicts.\n"
        ),
        f"![Figure 4]({figures['tsne']})\n",
    ]


def _settings_notes(cfg: RunConfig) -> list[str]:
    """The model, the aggregation and where we deviate from Dugdale's notebook."""
    return [
        "## Settings and deviations from the notebook\n",
        (
            "- Model: Conv(1->16, k3) BN LeakyReLU(0.01), Conv(16->32, k3) BN LeakyReLU, flatten 32x24x24, linear heads to a "
            f"{cfg.model.latent_dim}-d mean and log-variance; the decoder mirrors it with transposed convolutions and BatchNorm; "
            f"Bernoulli likelihood (sigmoid + BCE summed per image) + KL with beta = {cfg.model.kl_weight:g}."
        ),
        (
            "- FedAvg by sample count over the whole state dict: BatchNorm running means and variances are averaged like weights, "
            "`num_batches_tracked` takes the maximum (the notebook averages every entry)."
        ),
        (
            "- Optimiser: as in the notebook, each client keeps its own Adam state from round to round "
            "(`federation.client_optimizer: keep`) and the centralised run uses one Adam for all epochs."
            if cfg.federation.client_optimizer == "keep"
            else "- Deviation: each client creates Adam afresh every round (`federation.client_optimizer: reset`); the notebook "
            "keeps each client's Adam state across rounds. The centralised run uses one Adam for all epochs."
        ),
        (
            "- Deviation: the training loss is the batch mean of the per-image sum (the notebook sums over the batch): "
            "Adam is invariant to that constant factor, so the updates are the same up to Adam's epsilon."
        ),
    ]


# --------------------------------------------------------------------------- entry point


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
        runs[mode] = StudyRun(cfg, run, result, load_run(run.path)[0])
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
    tsne = {
        "test": min(tsne_points, len(groups[0].test_images)),
        "generated": min(tsne_points, *(len(x) for x in images.values())),
    }
    figures = draw_figures(out, runs, groups[0], images, probs, curves, tsne)
    numbers = {m: run_numbers(runs[m], curves[m], train_images, probs[m]) for m in MODES}
    v = verdict(numbers)
    command = study_command(preset, opts)
    summary = {
        "preset": preset,
        "command": command,
        "verdict": v,
        "sentence": verdict_sentence(v, numbers),
        "tsne_points": tsne,
    }
    atomic_write_json(out / "dugdale.json", summary | numbers | {"study_seconds": time.perf_counter() - start})
    return atomic_write_text(out / "dugdale.md", page_markdown(command, runs, numbers, v, figures, tsne))


def draw_figures(
    out: Path,
    runs: dict[str, StudyRun],
    group: GroupData,
    images: dict[str, torch.Tensor],
    probs: dict[str, np.ndarray],
    curves: dict[str, LossCurve],
    tsne: dict[str, int],
) -> dict[str, str]:
    """Figures 1-4 as PNGs in ``out``; returns figure key -> file name."""
    files = {
        "reconstructions": "figure1_reconstructions.png",
        "generations": "figure2_generations.png",
        "losses": "figure3_losses.png",
        "tsne": "figure4_tsne.png",
    }
    figure_reconstructions(runs, group.test_images, out / files["reconstructions"])
    figure_generations(runs, out / files["generations"])
    plot_loss_overlay({f"{LABELS[m]} ({runs[m].schedule()})": curves[m] for m in MODES}, out / files["losses"])
    k, n = tsne["generated"], tsne["test"]
    generated = {m: (images[m][:k].float() / 255, probs[m][:k].argmax(axis=1)) for m in MODES}
    figure_tsne(
        group.test_images[:n], group.test_labels[:n].numpy(), generated, out / files["tsne"], runs["federated"].cfg.seed
    )
    return files
