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

from fissionvae.config import GroupConfig, RunConfig, check_client_counts, check_subset_sizes
from fissionvae.data import standin
from fissionvae.data.folders import FolderError, FolderImages, load_image_folder
from fissionvae.data.sources import load_split
from fissionvae.seeding import numpy_rng


@dataclass(frozen=True)
class GroupData:
    """One group's images as float tensors (N, C, H, W) in [0, 1], with class labels."""

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


def load_group(
    g: GroupConfig, index: int, seed: int, data_dir: str | Path | None, download: bool, progress: bool = True
) -> GroupData:
    """Load one group's train/test split (seeded subsets when sizes are set).

    ``progress``: show the download bar of a missing dataset file (``--no-progress`` turns it off).

    ``dataset`` is a registered IDX dataset, an RGB stand-in (``mnist-rgb``, ``fashion-mnist-rgb``:
    data/standin.py) or ``folder`` (data/folders.py).
    """
    if g.dataset == "folder":
        tr_x, tr_y, te_x, te_y = _folder_splits(g)
    else:
        base = standin.BASE.get(g.dataset, g.dataset)
        tr_x, tr_y = load_split(base, "train", data_dir, download=download, progress=progress)
        te_x, te_y = load_split(base, "test", data_dir, download=download, progress=progress)
    check_subset_sizes(g, f"data.groups[{index}]", len(tr_x), len(te_x))
    tr = seeded_subset(len(tr_x), g.train_size, seed, 2 * index)
    te = seeded_subset(len(te_x), g.test_size, seed, 2 * index + 1)
    if standin.is_standin(g.dataset):
        train_images, test_images = (
            standin.standin_images(g.dataset, "train", tr_x, tr),
            standin.standin_images(g.dataset, "test", te_x, te),
        )
    else:
        train_images, test_images = tr_x[tr], te_x[te]
    return GroupData(
        name=g.name,
        dataset=g.dataset,
        train_images=to_float_images(train_images),
        train_labels=torch.from_numpy(np.asarray(tr_y[tr], dtype=np.int64)),
        test_images=to_float_images(test_images),
        test_labels=torch.from_numpy(np.asarray(te_y[te], dtype=np.int64)),
    )


#: the held-out test images of a folder group without a test folder are the same in every run
HOLDOUT_SEED = 0


def _folder_splits(g: GroupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images and int64 labels of a folder group's train and test sets (labels share classes)."""
    f = g.folder
    assert f is not None  # validate() guarantees it

    def load(root: str) -> FolderImages:
        return load_image_folder(root, size=f.size, resample=f.resample, strict=f.strict, labels=f.labels)

    train = load(f.train)
    if f.test is None:
        n = len(train.files)
        n_test = max(1, round(f.test_fraction * n))
        if n - n_test < 1:
            raise FolderError(
                f"group {g.name!r}: {f.train} has {n} image(s), too few to hold out a test set; give folder.test"
            )
        perm = numpy_rng(HOLDOUT_SEED, "subset", 1_000_003).permutation(n)
        te_idx, tr_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        return train.images[tr_idx], train.labels[tr_idx], train.images[te_idx], train.labels[te_idx]
    test = load(f.test)
    classes = sorted(set(train.classes) | set(test.classes))
    remap = lambda fi: np.array([classes.index(c) for c in fi.classes], dtype=np.int64)[fi.labels]  # noqa: E731
    return train.images, remap(train), test.images, remap(test)


def load_groups(cfg: RunConfig, data_dir: str | Path | None = None, *, progress: bool = True) -> list[GroupData]:
    """All groups of the config, in config order (group index = position); ``progress``: download bars."""
    data_dir = data_dir if data_dir is not None else cfg.data.dir
    groups = [load_group(g, i, cfg.seed, data_dir, cfg.data.download, progress) for i, g in enumerate(cfg.data.groups)]
    check_client_counts(cfg, [len(g.train_images) for g in groups])
    return groups


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
    for gi, (gcfg, gd) in enumerate(zip(cfg.data.groups, groups, strict=True)):
        for shard in iid_partition(len(gd.train_images), gcfg.clients, cfg.seed, gi):
            idx = torch.from_numpy(shard)
            clients.append(
                ClientData(
                    len(clients),
                    gd.train_images[idx],
                    gd.train_labels[idx],
                    torch.full((len(shard),), gi, dtype=torch.int64),
                )
            )
    return clients


def partition_sizes(cfg: RunConfig, groups: list[GroupData]) -> list[int]:
    """Each client's sample count as :func:`build_clients` partitions the data, without building clients.

    This is what the server knows about every client (a reply's claimed count is checked against it).
    """
    if cfg.mode == "centralized":
        return [sum(len(g.train_images) for g in groups)]
    sizes: list[int] = []
    for gcfg, gd in zip(cfg.data.groups, groups, strict=True):
        n, k = len(gd.train_images), gcfg.clients
        sizes.extend(n // k + (1 if i < n % k else 0) for i in range(k))  # np.array_split's shard sizes
    return sizes


def _centralized_client(groups: list[GroupData]) -> ClientData:
    return ClientData(
        client_id=0,
        images=torch.cat([g.train_images for g in groups]),
        labels=torch.cat([g.train_labels for g in groups]),
        group_ids=torch.cat([torch.full((len(g.train_images),), i, dtype=torch.int64) for i, g in enumerate(groups)]),
    )
