"""The Dugdale study's figure page (Markdown): verdict, numbers table with the floor, notes, figures, settings."""

from __future__ import annotations

from fissionvae.config import RunConfig
from fissionvae.evaluation.evaluate import EvalOptions
from fissionvae.evaluation.report import _md_table
from fissionvae.studies.dugdale_figures import GENERATIONS, RECON_INPUTS
from fissionvae.studies.dugdale_numbers import CONFIDENT
from fissionvae.studies.dugdale_presets import PRESETS, StudyRun
from fissionvae.studies.dugdale_verdict import verdict_sentence


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x + 0.0, spec)  # + 0.0: no "-0.000"


def _rel(f: float | None, c: float | None) -> str:
    return "-" if f is None or c is None else f"{f / c - 1:+.1%}"


def _pm(n: dict, key: str) -> str:
    return "-" if key not in n else f"{n[key]:.2f} ± {n.get(key + '_half_width', 0.0):.2f}"


def numbers_table(numbers: dict[str, dict]) -> str:
    """The Markdown table: one row per quantity, columns centralised, federated, relative, floor."""
    c, f, floor = numbers["centralized"], numbers["federated"], numbers.get("floor", {})

    def row(label: str, key: str, spec: str = ".2f", relative: bool = False, floor_value: str = "") -> list[str]:
        rel = _rel(f.get(key), c.get(key)) if relative else ""
        return [label, _fmt(c.get(key), spec), _fmt(f.get(key), spec), rel, floor_value]

    floor_nll = _fmt(floor.get("nll"))
    rows = [
        ["schedule", c["schedule"], f["schedule"], "", "fit once"],
        [
            f"images processed (passes over {c['train_images']:,} training images)",
            f"{c['images_processed']:,} ({c['passes']:.1f})",
            f"{f['images_processed']:,} ({f['passes']:.1f})",
            "",
            "",
        ],
        [
            "training wall time, s (sum of round times)",
            _fmt(c["train_wall_seconds"], ".0f"),
            _fmt(f["train_wall_seconds"], ".0f"),
            "",
            "",
        ],
        ["evaluation wall time, s", _fmt(c["eval_seconds"], ".0f"), _fmt(f["eval_seconds"], ".0f"), "", ""],
        [
            f"FID ± bootstrap 95% half-width, lower is better ({c.get('fid_generated', '-')} generated vs "
            f"{c.get('fid_real', '-')} test images)",
            _pm(c, "fid"),
            _pm(f, "fid"),
            _rel(f.get("fid"), c.get("fid")),
            "- (one repeated image)",
        ],
        [
            f"IS, MNIST digit classifier, higher is better ({c['generated']} generated, 10 splits)",
            f"{c['is_mean']:.2f} ± {c['is_std']:.2f}",
            f"{f['is_mean']:.2f} ± {f['is_std']:.2f}",
            _rel(f["is_mean"], c["is_mean"]),
            "",
        ],
        row(f"class coverage: entropy of predicted digits / ln 10 ({c['generated']} generated)", "coverage", ".3f"),
        row(
            f"confident share: top class probability >= {CONFIDENT} ({c['generated']} generated)",
            "confident_share",
            ".3f",
        ),
        [
            f"-ELBO ± 1.96 s.e., nats/image, lower is better ({c['nll_images']} test images)",
            _pm(c, "neg_elbo"),
            _pm(f, "neg_elbo"),
            _rel(f["neg_elbo"], c["neg_elbo"]),
            floor_nll + " (exact NLL)",
        ],
        row("-ELBO, bits/dim", "neg_elbo_bits_per_dim", ".4f"),
        row(
            f"importance-weighted NLL bound, K={c['iw_k']}, nats/image ({c['nll_images']} test images)",
            "iw_nll",
            relative=True,
            floor_value=floor_nll,
        ),
        row("last round's test reconstruction term, nats/image", "final_test_recon", floor_value=floor_nll),
        row("last round's test KL term, nats/image", "final_test_kl"),
    ]
    return _md_table(["", "centralised", "federated", "federated vs centralised", "floor (mean image)"], rows)


def study_command(preset: str, opts: EvalOptions) -> str:
    """The ``fissionvae study dugdale`` command line that computes these numbers."""
    p = PRESETS[preset]
    args = [] if preset == "full" else [f"--preset {preset}"]
    args += [] if opts.num_samples == p.num_samples else [f"--num-samples {opts.num_samples}"]
    args += [] if opts.iw_samples == p.iw_samples else [f"--iw-samples {opts.iw_samples}"]
    return " ".join(["fissionvae study dugdale", *args])


def page_markdown(
    command: str,
    preset: str,
    runs: dict[str, StudyRun],
    numbers: dict[str, dict],
    v: dict,
    figures: dict[str, str],
    tsne: dict[str, int],
) -> str:
    """The figure page: verdict, numbers table, notes, four figures, settings."""
    smoke = PRESETS[preset].smoke_test
    title = "# Dugdale (2023): federated vs centralised conv VAE on MNIST" + (" (SMOKE TEST)" if smoke else "")
    head = [
        title + "\n",
        f"Written by `{command}`; runs `{runs['centralized'].run.path}` (centralised) and "
        f"`{runs['federated'].run.path}` (federated).\n",
        f"**{verdict_sentence(v, numbers, smoke)}**\n",
        "## Numbers\n",
        numbers_table(numbers),
    ]
    lines = (
        head
        + _number_notes(numbers["centralized"], numbers.get("floor", {}))
        + _figure_sections(runs["federated"].cfg, figures, tsne)
        + _settings_notes(runs["federated"].cfg)
    )
    return "\n".join(lines) + "\n"


def _number_notes(c: dict, floor: dict) -> list[str]:
    """What the table's numbers are, with their sample counts."""
    reduced = " (REDUCED sample count: compare only with numbers of the same count)" if c["reduced"] else ""
    return [
        (
            f"- FID: TF-ported FID Inception-v3, {c.get('fid_generated', '-')} generated images per model vs "
            f"{c.get('fid_real', '-')} "
            f"test images{reduced}. FID is biased upwards at small counts (about c/N); its ± is the 95% bootstrap "
            "interval "
            "over the generated images."
        ),
        (
            "- Classifier scores: the evaluation's domain classifier, which for a single MNIST group is a 10-class "
            "digit CNN "
            f"(test accuracy {c['classifier_test_accuracy']:.3f}). Its IS is on a 10-class scale, not the ImageNet "
            "Inception's. "
            "Group purity is trivially 1 with one group, so we report class coverage (how evenly the digits are "
            "generated) and the "
            f"confident share (how many generations the classifier recognises with probability >= {CONFIDENT})."
        ),
        (
            f"- NLL: negative ELBO (one z sample per image; ± 1.96 standard errors over the test images) and the "
            f"importance-weighted bound with K={c['iw_k']}, on {c['nll_images']} test images; Bernoulli likelihood on "
            "grey levels."
        ),
        (
            "- Floor: the mean-image model (each pixel Bernoulli with the mean training intensity), scored on the "
            "same "
            f"{floor.get('test_images', '-')} test images; a model whose reconstruction term is not below it has not "
            "learned "
            "the digits. Its samples are one repeated image, so it has no FID."
        ),
        (
            "- Verdict: `match_verdict` of fissionvae.evaluation.noise on FID and -ELBO, each with its noise and a "
            "tolerance "
            "(FID 10%, -ELBO 2% of the two values' mean): same, differs or inconclusive."
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
            f"The first {RECON_INPUTS} test images (left) and their reconstructions by the centralised (middle) and "
            "federated (right) "
            "model (mean of p(x|z) at z = mean of q(z|x)).\n"
        ),
        f"![Figure 1]({figures['reconstructions']})\n",
        "## Figure 2: generations\n",
        (
            f"{GENERATIONS} generations per model (mean of p(x|z)), decoded from the same {GENERATIONS} draws z ~ "
            "N(0, I): "
            "centralised left, federated right.\n"
        ),
        f"![Figure 2]({figures['generations']})\n",
        "## Figure 3: loss curves\n",
        (
            "Reconstruction (BCE), KL and total loss per image, both runs on one axis: passes over the training set "
            "(one centralised "
            "epoch = 1; one federated round = local epochs x all clients' data). Solid: training loss, the mean over "
            "the round "
            f"(drawn at its middle); dashed: the test subset after the round, in eval mode ({cfg.eval.test_per_group} "
            "test images at most).\n"
        ),
        f"![Figure 3]({figures['losses']})\n",
        "## Figure 4: t-SNE of test images and generations\n",
        (
            f"One t-SNE embedding (after PCA to 50 dimensions) of the first {tsne['test']} test images and of "
            f"{tsne['generated']} "
            "generations per model (generations, not reconstructions). Left: test images by label; middle and right: "
            "test images "
            "in grey, a model's generations coloured by the digit the classifier predicts.\n"
        ),
        f"![Figure 4]({figures['tsne']})\n",
    ]


def _settings_notes(cfg: RunConfig) -> list[str]:
    """The model, the aggregation and where we deviate from Dugdale's notebook."""
    out_norm = cfg.model.decoder.output_norm
    return [
        "## Settings and deviations from the notebook\n",
        (
            "- Model: Conv(1->16, k3) BN LeakyReLU(0.01), Conv(16->32, k3) BN LeakyReLU, flatten 32x24x24, linear "
            "heads to a "
            f"{cfg.model.latent_dim}-d mean and log-variance; the decoder mirrors it with transposed convolutions and "
            "BatchNorm"
            + (", ending in BatchNorm2d(1) before the sigmoid as in the notebook" if out_norm else "")
            + f"; Bernoulli likelihood (sigmoid + BCE summed per image) + KL with beta = {cfg.model.kl_weight:g}."
        ),
        *(
            []
            if out_norm
            else [
                "- **Deviation (this preset): no BatchNorm on the decoder's output** (`model.decoder.output_norm: "
                "false`). "
                "The notebook's BatchNorm2d(1) normalises every batch's output logits to its learned scale and shift, "
                "which "
                "starts at 1 and 0 and moves by about the learning rate per Adam step: black backgrounds need logits "
                "far "
                "below -3, so the model spends thousands of steps with grey backgrounds and a reconstruction term "
                "above the "
                "mean-image floor (docs/results/dugdale.md has the controlled runs)."
            ]
        ),
        (
            "- FedAvg by sample count over the whole state dict: BatchNorm running means and variances are averaged "
            "like weights, "
            "`num_batches_tracked` takes the maximum (the notebook averages every entry)."
        ),
        (
            "- Optimiser: as in the notebook, each client keeps its own Adam state from round to round "
            "(`federation.client_optimizer: keep`) and the centralised run uses one Adam for all epochs."
            if cfg.federation.client_optimizer == "keep"
            else "- Deviation: each client creates Adam afresh every round (`federation.client_optimizer: reset`); "
            "the notebook keeps each client's Adam state across rounds. "
            "The centralised run uses one Adam for all epochs."
        ),
        (
            "- Deviation: the training loss is the batch mean of the per-image sum (the notebook sums over the batch): "
            "Adam is invariant to that constant factor, so the updates are the same up to Adam's epsilon."
        ),
    ]
