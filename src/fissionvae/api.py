"""Python API: train, resume and load runs.

>>> from fissionvae.api import train_from_config, load_run
>>> run = train_from_config("configs/mixed_mnist/quick.yaml", overrides=["train.rounds=2"])
>>> model, cfg = load_run(run.path)
>>> images = model.sample("fashion", 16)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fissionvae.config import ConfigError, RunConfig, apply_overrides, load_config, load_yaml_with_extends, save_config
from fissionvae.federation.engine import train
from fissionvae.federation.state import ServerState
from fissionvae.models.protocol import GenerativeModel
from fissionvae.models.vae import build_model
from fissionvae.runs import RunDir

# Settings a resumed run may change: they extend or observe training, never alter its past.
RESUMABLE_OVERRIDES = (
    "train.rounds",
    "train.centralized_epochs",
    "train.device",
    "federation.threads",
    "data.dir",
    "data.download",
)


def train_from_config(
    config: str | Path | RunConfig,
    overrides: list[str] | None = None,
    runs_dir: str | Path = "runs",
    name: str | None = None,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
) -> RunDir:
    """Validate the config, create a run folder under ``runs_dir`` and train.

    A ``data_dir`` given here is remembered in the run's saved config (``data.dir``, made absolute),
    so that ``evaluate`` / ``resume`` of the run find the same files without being told again
    (and an offline machine does not try to download them). It does not change any number.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(Path(data_dir).resolve())))
    run = RunDir.create(runs_dir, cfg, name)
    train(cfg, run, data_dir=data_dir, max_rounds=max_rounds, progress=progress)
    return run


def resume_config(run: RunDir, overrides: list[str] | None = None) -> RunConfig:
    """The run's saved config with the (few) overrides a resume may apply."""
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if not key.startswith(RESUMABLE_OVERRIDES):
            raise ConfigError(
                f"--set {key}: cannot be changed when resuming (allowed: {', '.join(RESUMABLE_OVERRIDES)})"
            )
    raw = apply_overrides(load_yaml_with_extends(run.config_path), overrides or [])
    return load_config(raw=raw)


def resume(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
) -> ServerState:
    """Continue a run from its last checkpoint (to the same weights as an uninterrupted run)."""
    run = RunDir.open(run_dir)
    cfg = resume_config(run, overrides)
    if overrides:
        save_config(cfg, run.config_path)
    return train(cfg, run, data_dir=data_dir, max_rounds=max_rounds, progress=progress)


def load_run(run_dir: str | Path) -> tuple[GenerativeModel, RunConfig]:
    """The trained model (weights of the last checkpoint, eval mode) and config of a run."""
    run = RunDir.open(run_dir)
    cfg = run.load_config()
    state = run.load_state()
    model = build_model(cfg, tuple(state.extra.get("image_shape", (1, 28, 28))))
    model.load_state_dict(state.weights)
    model.eval()
    return model, cfg
