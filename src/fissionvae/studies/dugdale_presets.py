"""The Dugdale study's presets: which pair of config files, at which evaluation sizes, and the run record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import RunConfig
from fissionvae.models.vae import FissionVAE
from fissionvae.runs import RunDir

CONFIGS_DIR = Path(__file__).resolve().parents[3] / "configs" / "dugdale"
MODES = ("centralized", "federated")
LABELS = {"centralized": "centralised", "federated": "federated"}


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
    smoke_test
        True for a preset too small for its verdict to mean anything (the page says so first).
    bootstrap_reps
        Bootstrap replicates of each run's FID interval (each one 2048-d matrix square root, about
        a second on this CPU).
    """

    federated: str
    centralized: str
    num_samples: int | None
    iw_samples: int
    tsne_points: int
    smoke_test: bool = False
    bootstrap_reps: int = 50


PRESETS = {
    "full": StudyPreset("federated.yaml", "centralized.yaml", None, 100, 1000),
    "reduced": StudyPreset("reduced.yaml", "reduced-centralized.yaml", 500, 10, 500),
    "fixed": StudyPreset("fixed.yaml", "fixed-centralized.yaml", 300, 10, 300),
    "schedule": StudyPreset("schedule.yaml", "schedule-centralized.yaml", 1000, 10, 500),
    "quick": StudyPreset("quick.yaml", "quick-centralized.yaml", 100, 5, 100, smoke_test=True, bootstrap_reps=5),
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
            return f"{count(t.centralized_epochs, 'epoch')}, 1 client"
        clients = sum(g.clients for g in self.cfg.data.groups)
        return f"{count(t.rounds, 'round')} x {count(t.local_epochs, 'local epoch')}, {count(clients, 'client')}"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def resolve_preset(quick: bool, preset: str | None) -> str:
    """The preset name from ``--quick`` / ``--preset`` (they must agree)."""
    name = preset or ("quick" if quick else "full")
    if name not in PRESETS:
        raise ValueError(f"unknown Dugdale preset {name!r}; choose one of {sorted(PRESETS)}")
    if quick and name != "quick":
        raise ValueError(f"--quick contradicts --preset {name}")
    return name
