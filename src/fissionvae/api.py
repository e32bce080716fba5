"""Python API: train, resume and load runs.

>>> from fissionvae.api import train_from_config, load_run
>>> run = train_from_config("configs/mixed_mnist/quick.yaml", overrides=["train.rounds=2"])
>>> model, cfg = load_run(run.path)
>>> images = model.sample("fashion", 16)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fissionvae.config import RunConfig, check_max_rounds, check_override_applies, load_config, save_config
from fissionvae.federation.engine import Federation, train
from fissionvae.federation.state import ServerState
from fissionvae.models.protocol import GenerativeModel
from fissionvae.models.vae import build_model
from fissionvae.resuming import RESUMABLE_OVERRIDES, resume_config
from fissionvae.runs import RunDir

__all__ = ["RESUMABLE_OVERRIDES", "load_run", "resume", "resume_config", "train_from_config"]


def train_from_config(
    config: str | Path | RunConfig,
    overrides: list[str] | None = None,
    runs_dir: str | Path = "runs",
    name: str | None = None,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
) -> RunDir:
    """Validate the config, read and check the data, then create a run folder under ``runs_dir`` and train.

    Every input is checked before the run folder exists: a bad config, option or data file
    leaves nothing behind. A ``data_dir`` given here is remembered in the run's saved config
    (``data.dir``, made absolute), so that ``evaluate`` / ``resume`` of the run find the same files
    without being told again (and an offline machine does not try to download them). It does not
    change any number.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    check_override_applies(cfg, overrides or [])
    check_max_rounds(max_rounds)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(Path(data_dir).resolve())))
    federation = Federation.from_config(cfg, data_dir, progress=progress)  # reads and checks every data file
    run = RunDir.create(runs_dir, cfg, name)
    train(cfg, run, data_dir=data_dir, max_rounds=max_rounds, progress=progress, federation=federation)
    return run


def resume(
    run_dir: str | Path,
    overrides: list[str] | None = None,
    data_dir: str | Path | None = None,
    max_rounds: int | None = None,
    progress: bool = True,
) -> ServerState:
    """Continue a run from its last checkpoint (to the same weights as an uninterrupted run).

    The config, the checkpoint and the data are all checked before the run folder is touched;
    then the temp files a killed process left are removed and training continues.
    """
    run = RunDir.open(run_dir)
    check_max_rounds(max_rounds)
    cfg = resume_config(run, overrides)
    federation = Federation.from_config(cfg, data_dir, progress=progress)
    run.remove_temp_files()
    if overrides:
        save_config(cfg, run.config_path)
    return train(cfg, run, data_dir=data_dir, max_rounds=max_rounds, progress=progress, federation=federation)


def load_run(run_dir: str | Path) -> tuple[GenerativeModel, RunConfig]:
    """The trained model (weights of the last checkpoint, eval mode) and config of a run."""
    run = RunDir.open(run_dir)
    cfg = run.load_config()
    state = run.load_state()
    model = build_model(cfg, tuple(state.extra.get("image_shape", (1, 28, 28))))
    model.load_state_dict(state.weights)
    model.eval()
    return model, cfg
