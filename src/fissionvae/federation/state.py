"""The server state, which is the checkpoint.

Everything a run needs to continue: the completed round count, the global weights (encoder,
every branch, the prior means), the resolved config, the accumulated wall time and, only when
clients keep their Adam state between rounds (``federation.client_optimizer: keep``, and always
for centralised training), each simulated client's optimiser state. Random streams are
functions of (seed, round, client), so no RNG state has to be stored.
Checkpoints are written atomically (temp file + rename): a kill at any moment leaves the
previous complete checkpoint readable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from fissionvae import __version__
from fissionvae.io import atomic_write

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, corrupt or from an incompatible version."""


@dataclass
class ServerState:
    round: int
    weights: dict[str, Tensor]
    config: dict
    wall_seconds: float = 0.0
    format_version: int = FORMAT_VERSION
    package_version: str = __version__
    extra: dict = field(default_factory=dict)
    client_states: dict = field(default_factory=dict)  # client id -> Adam state dict (keep mode only)


def save_state(state: ServerState, path: str | Path) -> Path:
    # field by field: dataclasses.asdict would deep-copy every tensor
    payload = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return atomic_write(path, lambda fh: torch.save(payload, fh))


def load_state(path: str | Path) -> ServerState:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise CheckpointError(f"{path}: checkpoint is corrupt or unreadable ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        version = payload.get("format_version") if isinstance(payload, dict) else None
        raise CheckpointError(f"{path}: checkpoint format {version!r} is not the supported format {FORMAT_VERSION}")
    problem = _payload_problem(payload)
    if problem:
        raise CheckpointError(f"{path}: not a fissionvae server state ({problem})")
    names = {f.name for f in dataclasses.fields(ServerState)}
    return ServerState(**{k: v for k, v in payload.items() if k in names})


def _payload_problem(payload: dict) -> str | None:
    """Why a checkpoint's payload is not a :class:`ServerState`, or None."""
    rnd = payload.get("round")
    if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
        return f"round {rnd!r} is not a count of rounds"
    weights = payload.get("weights")
    if not isinstance(weights, dict) or not all(isinstance(v, Tensor) for v in weights.values()):
        return "weights is not a mapping of names to tensors"
    for name in ("config", "extra", "client_states"):
        if not isinstance(payload.get(name, {}), dict):
            return f"{name} is not a mapping"
    if "config" not in payload:
        return "no stored config"
    return None
