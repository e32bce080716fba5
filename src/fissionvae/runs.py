"""The run folder: one layout shared by every engine and command.

::

    runs/<name>-<timestamp>/
        config.yaml             resolved config (what the run actually used)
        status.json             state (running/stopped/finished), rounds done / planned, wall time
                                (rewritten after every checkpoint; "running" after a kill means
                                the process died mid-run: resume it)
        metrics.jsonl           one JSON line per client update and per round
        checkpoints/latest.pt   the server state after the last complete round
        images/                 reconstructions.png, samples_<group>.png
        plots/                  loss.png
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from fissionvae.config import RunConfig, check_run_name, load_config, save_config
from fissionvae.federation.state import ServerState, load_state, save_state
from fissionvae.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, remove_stale_temp_files


class RunDirError(RuntimeError):
    """A run folder is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "latest.pt"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def images_dir(self) -> Path:
        return self.path / "images"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @classmethod
    def create(cls, root: str | Path, cfg: RunConfig, name: str | None = None) -> RunDir:
        """A new, empty run folder under ``root`` holding the resolved config."""
        root = Path(root)
        if name is not None:
            check_run_name(name, "--name")
        if root.exists() and not root.is_dir():
            raise RunDirError(f"--runs-dir {root}: is a file, not a folder")
        base = name or f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = root / base, 1
        while path.exists():
            n += 1
            path = root / f"{base}-{n}"
        path.mkdir(parents=True)
        run = cls(path)
        save_config(cfg, run.config_path)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(Path(path))
        if not run.path.is_dir():
            raise RunDirError(f"{run.path}: not a run folder (no such folder)")
        if not run.config_path.is_file():
            raise RunDirError(f"{run.path}: not a run folder (no config.yaml)")
        return run

    def load_config(self, overrides: list[str] | None = None) -> RunConfig:
        return load_config(self.config_path, overrides)

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def load_state(self) -> ServerState:
        return load_state(self.checkpoint_path)

    def save_state(self, state: ServerState) -> None:
        save_state(state, self.checkpoint_path)

    def remove_temp_files(self) -> list[Path]:
        """Remove the temp files of atomic writes that a killed process left in the folder."""
        return remove_stale_temp_files(self.path)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def append_metrics(self, records: list[dict]) -> None:
        append_jsonl(self.metrics_path, records)

    def truncate_metrics(self, completed_rounds: int) -> None:
        """Drop lines of rounds after the checkpoint (written before a kill, never checkpointed)."""
        kept = [r for r in self.metrics() if r.get("round", 0) <= completed_rounds]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))

    def write_status(self, state: ServerState, planned_rounds: int, running: bool, failure: str | None = None) -> None:
        """status.json; ``failure`` (a one-line reason) makes the state "failed" and is kept as ``error``."""
        if failure is not None:
            phase = "failed"
        else:
            phase = "running" if running else ("finished" if state.round >= planned_rounds else "stopped")
        atomic_write_json(
            self.status_path,
            {
                "state": phase,
                "rounds_done": state.round,
                "rounds_planned": planned_rounds,
                "wall_seconds": round(state.wall_seconds, 3),
                "package_version": state.package_version,
            }
            | ({"error": failure} if failure is not None else {}),
        )
