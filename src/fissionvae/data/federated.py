"""Client groups and clients built from the config's list of groups (data-driven).

Each group is one source dataset. Its (optionally subsetted) training split is shuffled with
the run seed and split IID and as evenly as possible among the group's clients (sizes differ
by at most one image). Test sets stay per group. In centralised mode one client holds every
group's training data, each image tagged with its group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fissionvae.config import GroupConfig, RunConfig
from fissionvae.data.sources import load_split
from fissionvae.seeding import numpy_rng


@dataclass(frozen=True)
class GroupData:
    """One group's images as float tensors (N, 1, H, W) in [0, 1], with class labels."""

    name: str
    dataset: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


@dataclass(frozen=True)
class ClientData:
    """What one client holds: images, their class labels and their group index."""

    client_id: int
    images: Tensor
    labels: Tensor
    group_ids: Tensor

    @property
    def num_samples(self) -> int:
        return int(self.images.shape[0])

    @property
    def groups(self) -> list[int]:
        return sorted(set(self.group_ids.tolist()))


def to_float_images(images: np.ndarray) -> Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    return t.float().div_(255.0)


def seeded_subset(n: int, size: int | None, seed: int, stream_key: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``size`` out of ``n`` (all if None)."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(numpy_rng(seed, "subset", stream_key).choice(n, size=size, replace=False))


def iid_partition(n: int, num_clients: int, seed: int, group_index: int = 0) -> list[np.ndarray]:
    """Split ``range(n)`` into ``num_clients`` disjoint, complete, near-equal random shards."""
    if not 1 <= num_clients <= n:
        raise ValueError(f"cannot split {n} samples among {num_clients} clients")
    perm = numpy_rng(seed, "partition", group_index).permutation(n)
    return [np.sort(s) for s in np.array_split(perm, num_clients)]


def load_group(g: GroupConfig, index: int, seed: int, data_dir: str | Path | None, download: bool) -> GroupData:
    """Load one group's train/test split (seeded subsets when sizes are set)."""
    tr_x, tr_y = load_split(g.dataset, "train", data_dir, download=download)
    te_x, te_y = load_split(g.dataset, "test", data_dir, download=download)
    tr = seeded_subset(len(tr_x), g.train_size, seed, 2 * index)
    te = seeded_subset(len(te_x), g.test_size, seed, 2 * index + 1)
    return GroupData(
        name=g.name,
        dataset=g.dataset,
        train_images=to_float_images(tr_x[tr]),
        train_labels=torch.from_numpy(np.asarray(tr_y[tr], dtype=np.int64)),
        test_images=to_float_images(te_x[te]),
        test_labels=torch.from_numpy(np.asarray(te_y[te], dtype=np.int64)),
    )


def load_groups(cfg: RunConfig, data_dir: str | Path | None = None) -> list[GroupData]:
    """All groups of the config, in config order (group index = position)."""
    data_dir = data_dir if data_dir is not None else cfg.data.dir
    return [load_group(g, i, cfg.seed, data_dir, cfg.data.download) for i, g in enumerate(cfg.data.groups)]


def client_groups(cfg: RunConfig) -> list[list[int]]:
    """Group indices of every client, in client-id order, from the config alone (no data)."""
    if cfg.mode == "centralized":
        return [list(range(len(cfg.data.groups)))]
    return [[gi] for gi, g in enumerate(cfg.data.groups) for _ in range(g.clients)]


def build_clients(cfg: RunConfig, groups: list[GroupData]) -> list[ClientData]:
    """Federated: each group's train set split over its clients. Centralised: one client, all data."""
    if cfg.mode == "centralized":
        return [_centralized_client(groups)]
    clients: list[ClientData] = []
    for gi, (gcfg, gd) in enumerate(zip(cfg.data.groups, groups)):
        for shard in iid_partition(len(gd.train_images), gcfg.clients, cfg.seed, gi):
            idx = torch.from_numpy(shard)
            clients.append(ClientData(len(clients), gd.train_images[idx], gd.train_labels[idx], torch.full((len(shard),), gi, dtype=torch.int64)))
    return clients


def _centralized_client(groups: list[GroupData]) -> ClientData:
    return ClientData(
        client_id=0,
        images=torch.cat([g.train_images for g in groups]),
        labels=torch.cat([g.train_labels for g in groups]),
        group_ids=torch.cat([torch.full((len(g.train_images),), i, dtype=torch.int64) for i, g in enumerate(groups)]),
    )
