"""The trained run that an evaluation reads: its checkpoint, its identity and its model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import Tensor

from fissionvae.federation.state import ServerState
from fissionvae.models.protocol import GenerativeModel
from fissionvae.models.vae import build_model
from fissionvae.runs import RunDir, RunDirError


def weights_digest(weights: dict[str, Tensor]) -> str:
    """sha256 over the checkpoint's tensors (names, shapes, bytes): the model's identity."""
    h = hashlib.sha256()
    for key in sorted(weights):
        t = weights[key].detach().contiguous().cpu()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def open_for_eval(run_dir: str | Path, allow_unfinished: bool) -> tuple[RunDir, ServerState]:
    """The run and its checkpoint, or a clear error (nothing is written before this passes)."""
    run = RunDir.open(run_dir)
    state = run.load_state()
    status = json.loads(run.status_path.read_text()) if run.status_path.is_file() else {}
    planned = status.get("rounds_planned")
    if planned is None:
        raise RunDirError(f"{run.path}: no status.json; the run folder is incomplete")
    if state.round < planned and not allow_unfinished:
        raise RunDirError(
            f"{run.path}: the run stopped at round {state.round} of {planned}; resume it first or pass "
            "--allow-unfinished"
        )
    return run, state


def model_of(run: RunDir, state: ServerState, device: str = "cpu") -> GenerativeModel:
    cfg = run.load_config()
    model = build_model(cfg, tuple(state.extra.get("image_shape", (1, 28, 28))))
    model.load_state_dict(state.weights)
    model.to(device)
    model.eval()
    return model
