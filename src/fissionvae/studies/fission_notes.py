"""The "how the numbers were made" and "scale" sections of the FissionVAE study's page."""

from __future__ import annotations

import math

from fissionvae.studies.fission_claims import Noise
from fissionvae.studies.fission_options import StudyOptions
from fissionvae.studies.page_render import Block


def noise_sentence(noise: Noise) -> str:
    """What the seed noise is on this page, computed from the noise table."""
    if not noise.seed_pairs:
        return (
            "Seed noise: not measured on this page (the noise table's second-seed runs are not done), so no FID gap "
            "can be told apart from noise and every FID claim is `inconclusive`."
        )
    pairs = "; ".join(f"{m} {a:.2f} vs {b:.2f}" for m, a, b in noise.seed_pairs)
    purity = "" if math.isinf(noise.seed["purity"]) else f", mean purity ±{noise.seed['purity']:.3f}"
    return (
        f"Seed noise: FID of two training seeds: {pairs}. The largest difference is taken as the half-width of one "
        f"run's seed noise: FID ±{noise.seed['fid']:.2f}{purity}."
    )


def notes(opts: StudyOptions, noise: Noise) -> list[Block]:
    """How the numbers were made: protocol, units, noise, floor, scale."""
    s = opts.scale
    gen = opts.num_samples or s.num_samples()
    subset = (
        ""
        if opts.test_size is None
        else (f" (reduced: a seeded subset of {opts.test_size:,} test images per group, also the NLL test set)")
    )
    count = (
        "20,000 (the paper protocol: as many as the test images, each group its share)"
        if gen is None
        else f"{gen:,} (reduced; FID is biased upwards at small counts, about c/N: compare only numbers with the same "
        "count)"
    )
    return [
        ("h", 2, "How the numbers were made"),
        (
            "ul",
            [
                "FID: TF-ported FID Inception-v3; overall = all generated images vs the union of both test sets, per "
                f"group = a group's samples vs its test set{subset}. Generated images per evaluation: {count}.",
                "FID noise: a 95% bootstrap interval over the generated images (50 resamples of the union of the "
                "groups' Inception features, the reference fixed; seed 0), stored per cell in the ledger. "
                "A resample repeats about a third of the images, and FID rises as the distinct images get fewer, so "
                "the interval sits slightly above its point estimate (the point may even lie just below the "
                "interval); only its half-width is used, as the noise. "
                + noise_sentence(noise)
                + " A cell's half-width is the larger of the two; a claim's gap must exceed the combined half-width "
                "of its two cells (`fissionvae.evaluation.noise.ordering_verdict`). Cells evaluated before the "
                "bootstrap existed have no interval and count as unmeasured.",
                "IS*: the tool's domain classifier (20 classes: 10 digits + 10 clothes), not the ImageNet Inception "
                "head the paper used; its scale differs from the paper's IS, so only the ordering is comparable.",
                "Group purity: share of a group's samples that the domain classifier places in that group's classes "
                "(the blending of the paper's Figures 2 and 4 as a number); its noise is the binomial 95% half-width.",
                f"NLL: negative ELBO in nats per pixel on each group's test set (the paper does not state its units; "
                f"its 0.18-0.30 are of that size), IW bound with K={opts.iw_samples or s.iw_samples()} in study.json. "
                "Table 6 gives ours in nats/dim, nats/image and bits/dim.",
                "Floor row: the mean-image model (each pixel Bernoulli with the group's mean training intensity; "
                "`fissionvae.evaluation.floor`). Its NLL is exact on the same test images; its FID scores its only "
                "sample, the mean image, repeated as many times as an evaluation generates (IS is meaningless for it); "
                "`-` until the test images' Inception statistics are cached by an evaluation on this machine (the "
                "floor never runs the test sets through Inception by itself).",
                "Table 5's '+L+D identical' row is FissionVAE+D (identical priors = no +L), the same run as Table 3's; "
                "'+H+L+D learnable' is Table 3's +H+L+D and Table 6's homogeneous row; Table 7 and Figure 10 evaluate "
                "the '+H+L+D wave' run of Table 5 with other pathways.",
                "Figure 10: pathway 1 (z1 ~ p_g(z1) -> q(z2|z1) -> p(z1|z2) -> p(x|z1)) where group g's z1 is drawn "
                "from the other group's prior and decoded by g's own branch; both conditions draw the same noise "
                "(evaluations made before that fix are marked unmeasured in the claims).",
                "Wall times are those of the machine that ran each run (shared CPUs slow everything down); training "
                "time sums the round times. The ledger records the CPU model of every run and evaluation.",
            ],
        ),
        ("h", 2, "Scale"),
        (
            "p",
            "Paper setting (`--preset full`): 20 clients (10 per group, 6,000 images each), Bernoulli(0.5) "
            "participation, 70 rounds x 5 local epochs, batch 32, Adam lr 1e-3; centralised 70 epochs; 20,000 "
            "generated images per evaluation, IW K=100. `--preset s` keeps the data, model and round structure and "
            "trains round(70 s) rounds (centralised: epochs), generates round(20,000 s) images and uses "
            f"K=round(100 s); run names end in `-reduced-s<s>`. This page: `{s.label}`.",
        ),
    ]
