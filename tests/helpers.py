"""Small builders shared by the engine tests (not fixtures: plain functions)."""

from __future__ import annotations

import os
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


def _parents() -> dict[int, int]:
    """PID -> parent PID of every process (from /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            out[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    return out


def children(pid: int | None = None) -> set[int]:
    """PIDs of the child processes of ``pid`` (default: this process)."""
    me = os.getpid() if pid is None else pid
    return {p for p, parent in _parents().items() if parent == me}


def descendants(pid: int) -> set[int]:
    """PIDs of ``pid``'s children, their children, and so on."""
    parents = _parents()
    out, todo = set(), [pid]
    while todo:
        here = todo.pop()
        new = {p for p, parent in parents.items() if parent == here} - out
        out |= new
        todo.extend(new)
    return out


def assert_gone(pids, before):
    assert not any(os.path.exists(f"/proc/{p}") for p in pids), "a worker process is still alive (or unreaped)"
    assert children() - before == set()
