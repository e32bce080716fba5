"""Small builders shared by the engine tests (not fixtures: plain functions)."""

from __future__ import annotations

from pathlib import Path

from fissionvae.config import RunConfig, deep_merge, load_config

REPO = Path(__file__).resolve().parents[1]

# The paper's Table 1 models as model-config overrides, keyed by their config file names.
TABLE1 = {
    "fedvae": {"prior": "identical", "decoder_branches": False},
    "fission_l": {"prior": "wave", "decoder_branches": False},
    "fission_d": {"prior": "identical", "decoder_branches": True},
    "fission_ld": {"prior": "wave", "decoder_branches": True},
    "fission_hld": {"prior": "wave", "decoder_branches": True, "hierarchical": True},
    "fission_hld_learnable": {"prior": "learnable", "decoder_branches": True, "hierarchical": True},
}


def tiny_config(data_dir: Path, **sections) -> RunConfig:
    """A two-group Mixed MNIST federation small enough for unit tests."""
    raw = {
        "name": "tiny",
        "seed": 3,
        "data": {
            "dir": str(data_dir),
            "download": False,
            "groups": [
                {"name": "mnist", "dataset": "mnist", "clients": 2, "train_size": 400, "test_size": 200},
                {"name": "fashion", "dataset": "fashion-mnist", "clients": 2, "train_size": 400, "test_size": 200},
            ],
        },
        "model": {
            "latent_dim": 8,
            "prior": "wave",
            "decoder_branches": True,
            "encoder_hidden": [64],
            "decoder": {"hidden": [64], "latent_hidden": [16]},
            "z2_dim": 4,
            "z2_encoder_hidden": [16],
        },
        "federation": {"participation": 0.5},
        "train": {"rounds": 4, "local_epochs": 1, "batch_size": 32, "centralized_epochs": 2},
        "eval": {"test_per_group": 100, "grid_size": 16, "recon_per_group": 4},
    }
    return load_config(raw=deep_merge(raw, sections))
