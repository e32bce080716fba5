"""What a resume checks before it touches a run folder: the checkpoint is the one server state.

A resume reads the run's ``config.yaml`` (plus the few ``--set`` overrides a resume may apply)
and holds it against the checkpoint: the config stored in the checkpoint must agree on every
key except :data:`RESUMABLE_OVERRIDES`, the checkpoint's weights must be exactly the parameters
(names and shapes) of the model that config builds, and the planned rounds may not fall below
the rounds already done. Each failure is one error naming the keys, and it is raised before any
file of the run is changed (metrics are truncated, and status rewritten, only afterwards).
"""

from __future__ import annotations

import json
from typing import Any

from fissionvae.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    check_override_applies,
    from_dict,
    load_config,
    load_yaml_with_extends,
)
from fissionvae.federation.state import CheckpointError, ServerState
from fissionvae.models.vae import build_model
from fissionvae.runs import RunDir, RunDirError

# Settings a resumed run may change: they extend or observe training, never alter its past.
RESUMABLE_OVERRIDES = (
    "train.rounds",
    "train.centralized_epochs",
    "train.device",
    "federation.threads",
    "data.dir",
    "data.download",
)


def resume_config(run: RunDir, overrides: list[str] | None = None) -> RunConfig:
    """The run's saved config with the (few) overrides a resume may apply, checked against its checkpoint."""
    overrides = overrides or []
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith(RESUMABLE_OVERRIDES):
            raise ConfigError(
                f"--set {key}: cannot be changed when resuming (allowed: {', '.join(RESUMABLE_OVERRIDES)})"
            )
    raw = apply_overrides(load_yaml_with_extends(run.config_path), overrides)
    cfg = load_config(raw=raw)
    check_override_applies(cfg, overrides)
    if run.has_checkpoint():
        check_checkpoint(cfg, run.load_state(), run, overrides)
    else:
        check_no_checkpoint_is_a_fresh_start(run)
    return cfg


def check_no_checkpoint_is_a_fresh_start(run: RunDir) -> None:
    """Without a checkpoint a resume starts at round 0, which is right only if none was ever written."""
    path = run.checkpoint_path
    if path.exists() or path.is_symlink():
        raise CheckpointError(f"{path}: is not a checkpoint file (a folder or a broken link)")
    try:
        done = json.loads(run.status_path.read_text()).get("rounds_done", 0) if run.status_path.is_file() else 0
    except (ValueError, AttributeError, OSError):
        raise RunDirError(f"{run.status_path}: not a status file written by fissionvae") from None
    if done:
        raise CheckpointError(
            f"{path}: missing, but {run.status_path.name} says {done} round(s) were done; restore the checkpoint "
            "(resuming would start again from round 0)"
        )


def check_checkpoint(cfg: RunConfig, state: ServerState, run: RunDir, overrides: list[str]) -> None:
    """Refuse a checkpoint that is not this config's server state (see the module docstring)."""
    where = run.checkpoint_path
    differing = config_differences(_stored_config(state, where), cfg.to_dict())
    if differing:
        raise ConfigError(
            f"{run.config_path} no longer matches the config stored in {where}: "
            + "; ".join(
                f"{key} is {ours!r} in config.yaml but {theirs!r} in the checkpoint" for key, theirs, ours in differing
            )
            + " (put the values back; a resume may only change "
            + ", ".join(RESUMABLE_OVERRIDES)
            + ")"
        )
    planned, option = cfg.effective_rounds, "train.centralized_epochs" if cfg.mode == "centralized" else "train.rounds"
    if planned < state.round:
        given = "--set " if any(o.split("=", 1)[0].strip() == option for o in overrides) else ""
        raise ConfigError(
            f"{given}{option}={planned}: the run has already done {state.round} rounds; a resume can only extend it"
        )
    check_weights(cfg, state, str(where))


def _stored_config(state: ServerState, where: Any) -> dict:
    """The checkpoint's config as a full dict (schema defaults filled in for keys added since)."""
    try:
        return from_dict(RunConfig, state.config).to_dict()
    except ConfigError as exc:
        raise CheckpointError(f"{where}: the config stored in this checkpoint is not a run config ({exc})") from None


def config_differences(stored: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, stored value, current value) wherever they differ, resumable keys excepted."""
    a, b = _flatten(stored), _flatten(current)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k) and not k.startswith(RESUMABLE_OVERRIDES)]


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list) and any(isinstance(v, dict) for v in tree):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in items:
        out |= _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def check_weights(cfg: RunConfig, state: ServerState, where: str) -> None:
    """The checkpoint's weights have exactly the names and shapes of the model ``cfg`` builds."""
    shape = state.extra.get("image_shape", (1, 28, 28)) if isinstance(state.extra, dict) else None
    if not (isinstance(shape, list | tuple) and len(shape) == 3 and all(isinstance(d, int) and d > 0 for d in shape)):
        raise CheckpointError(f"{where}: the checkpoint's image_shape {shape!r} is not (C, H, W)")
    expected = {k: tuple(v.shape) for k, v in build_model(cfg, tuple(shape)).state_dict().items()}
    found = {k: tuple(getattr(v, "shape", ())) for k, v in state.weights.items()}
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"missing {_few(missing)}")
    if unexpected := sorted(set(found) - set(expected)):
        problems.append(f"unexpected {_few(unexpected)}")
    if reshaped := [k for k in sorted(set(expected) & set(found)) if expected[k] != found[k]]:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} tensor(s) of another shape, e.g. {k} {found[k]} instead of {expected[k]}")
    if problems:
        raise CheckpointError(
            f"{where}: the checkpoint's weights do not fit the model of {cfg.name!r} "
            f"(a foreign checkpoint or a changed architecture): {'; '.join(problems)}"
        )


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")
