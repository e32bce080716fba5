"""Small builders shared by the engine tests (not fixtures: plain functions)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

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


SMALL_MODEL = {
    "latent_dim": 8,
    "z2_dim": 4,
    "encoder_kind": "strided",
    "encoder_hidden": [4, 8],
    "encoder_head": [16],
    "norm": "group",
    "decoder": {"kind": "strided", "hidden": [8, 4], "head": [16], "latent_hidden": [16]},
    "z2_encoder_hidden": [16],
}


def rgb_config(data_dir=None, groups=3, model=None, **sections) -> RunConfig:
    """A small RGB federation on the stand-in (three groups: two datasets, one repeated)."""
    datasets = ["mnist-rgb", "fashion-mnist-rgb", "mnist-rgb"][:groups]
    raw = {
        "name": "rgb",
        "seed": 1,
        "data": {
            "dir": str(data_dir) if data_dir else None,
            "download": False,
            "groups": [
                {"name": f"g{i}", "dataset": d, "clients": 2, "train_size": 200, "test_size": 100}
                for i, d in enumerate(datasets)
            ],
        },
        "model": {**SMALL_MODEL, "likelihood": "gaussian", **(model or {})},
        "train": {"rounds": 2, "local_epochs": 1},
        "eval": {"test_per_group": 50, "grid_size": 4, "recon_per_group": 2},
        **sections,
    }
    return load_config(raw=raw)


def rgb_batch(n=12, groups=3):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g).float() / 255, torch.arange(n) % groups
