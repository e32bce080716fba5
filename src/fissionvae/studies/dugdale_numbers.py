"""The Dugdale study's numbers: per-run scores with their noise, and the floor (mean-image model)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fissionvae.data.federated import GroupData
from fissionvae.evaluation.evaluate import EvalOptions, to_uint8
from fissionvae.evaluation.floor import FloorModel
from fissionvae.studies.common import read_status
from fissionvae.studies.dugdale_presets import StudyRun
from fissionvae.studies.figures import LossCurve
from fissionvae.studies.run_noise import fid_measured, neg_elbo_half_width

if TYPE_CHECKING:
    from fissionvae.evaluation.classifier import DomainClassifier

CONFIDENT = 0.9  # "confident share": samples whose top class probability is at least this


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


def floor_numbers(group: GroupData) -> dict:
    """The mean-image Bernoulli floor on the study's test images: its NLL (nats/image, BCE like the VAEs')."""
    floor = FloorModel.fit(group.train_images, "bernoulli")
    return {"nll": floor.nll(group.test_images).mean().item(), "test_images": len(group.test_images)}


def run_numbers(
    sr: StudyRun, curve: LossCurve, groups: list[GroupData], probs: np.ndarray, bootstrap_reps: int
) -> dict:
    """The table's numbers of one run (all sample counts and noise half-widths included)."""
    r, status = sr.result, read_status(sr.run)
    train_images = len(groups[0].train_images)
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
        "coverage": cls["per_group"][groups[0].name]["coverage_entropy_normalised"],
        "confident_share": confident_share(probs),
        "classifier_test_accuracy": cls["classifier_test_accuracy"],
        "neg_elbo": nll["neg_elbo"]["nats_per_image"],
        "neg_elbo_half_width": neg_elbo_half_width(sr.model, groups, sr.cfg.seed),
        "neg_elbo_bits_per_dim": nll["neg_elbo"]["bits_per_dim"],
        "iw_nll": nll["iw"]["nats_per_image"],
        "iw_k": nll["iw"]["k"],
        "nll_images": nll["images"],
        "final_test_recon": float(curve.test["recon"][-1]),
        "final_test_kl": float(curve.test["kl_prior"][-1]),
    }
    if "fid" in r:
        fid = fid_measured(sr.run.path, r, groups, reps=bootstrap_reps)
        out |= {
            "fid": fid.value,
            "fid_half_width": fid.half_width,
            "fid_generated": r["fid"]["generated"],
            "fid_real": r["fid"]["real"],
        }
    return out
