"""A small CNN domain classifier over (group, label) classes, and scores built on it.

The classifier is trained on the union of the client groups' training sets; class
``offset[g] + label`` stands for label ``label`` of group ``g`` (Mixed MNIST: 20 classes,
MNIST digits 0-9 then FashionMNIST classes 0-9).  It scores generated images by

* :func:`group_purity`: the share of group ``g``'s samples classified into group ``g``'s
  classes;
* :func:`class_coverage_entropy`: the entropy (nats) of the predicted within-group class
  histogram, optionally divided by ``log(number of classes of g)``;
* the Inception Score of its logits (:mod:`fissionvae.evaluation.inception_score`).

Measured on a 2-core AMD EPYC (torch 2.13 CPU), Mixed MNIST (120,000 training images),
``epochs=2, seed=0, batch_size=128``: 95.17% accuracy on the 20,000 test images (MNIST 99.21%,
FashionMNIST 91.13%); 77 s of CPU time with one torch thread (192 s wall while other jobs kept
the machine's load average near 10).  See docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fissionvae.evaluation.fid import array_sha256
from fissionvae.evaluation.inception import default_cache_dir
from fissionvae.evaluation.inception_score import (
    ImageArray,
    as_float_images,
    classifier_logits,
)
from fissionvae.io import atomic_write

ARCH_VERSION = "domain-cnn-v2"
LEARNING_RATE = 3e-3
Group = tuple[str, ImageArray, np.ndarray]  # (name, images, labels)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    """Build a stride-2 'same'-padded convolution, batch norm and ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def build_domain_cnn(in_channels: int, image_size: int, num_classes: int) -> nn.Sequential:
    """Two stride-2 conv-BN-ReLU stages (5x5 to 32, 3x3 to 128 channels) and an MLP head.

    About 2.8 M multiply-adds per 28 x 28 image: chosen among four small CNNs as the cheapest
    one that passed 95% on Mixed MNIST after two epochs.

    Parameters
    ----------
    in_channels
        1 for grey, 3 for RGB.
    image_size
        Side of the square input (e.g. 28 or 32).
    num_classes
        Outputs of the head.

    Returns
    -------
    torch.nn.Sequential
        Maps float B x C x S x S images in [0, 1] to B x num_classes logits.
    """
    side = (image_size - 1) // 2 + 1
    side = (side - 1) // 2 + 1
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 32, 5),
        *_conv_bn_relu(32, 128, 3),
        nn.Flatten(),
        nn.Linear(128 * side * side, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )


@dataclass
class DomainClassifier:
    """A trained domain classifier with the layout of its (group, label) classes.

    Attributes
    ----------
    module
        The network (float B x C x S x S in [0, 1] -> B x num_classes logits).
    group_names
        Names of the groups, in class order.
    class_offsets
        First class index of each group; group ``g`` owns classes
        ``class_offsets[g]`` to ``class_offsets[g + 1] - 1`` (or ``num_classes - 1``).
    num_classes
        Total number of classes.
    in_channels, image_size
        Input layout the module was built for.
    """

    module: nn.Module
    group_names: tuple[str, ...]
    class_offsets: tuple[int, ...]
    num_classes: int
    in_channels: int
    image_size: int

    def group_classes(self, group_index: int) -> range:
        """Return the class indices that belong to group ``group_index``."""
        bounds = (*self.class_offsets, self.num_classes)
        return range(bounds[group_index], bounds[group_index + 1])

    def logits(self, images: ImageArray, batch_size: int = 512) -> np.ndarray:
        """float64 N x num_classes logits of uint8 or [0, 1] float images."""
        return classifier_logits(self.module, images, batch_size)

    def predict(self, images: ImageArray, batch_size: int = 512) -> np.ndarray:
        """int64 predicted class index of each image."""
        return self.logits(images, batch_size).argmax(axis=1).astype(np.int64)

    def group_of(self, classes: np.ndarray) -> np.ndarray:
        """Group index of each class index."""
        return np.searchsorted(np.asarray(self.class_offsets), classes, side="right") - 1

    def accuracy(self, groups: Sequence[Group]) -> float:
        """Share of correctly classified (group, label) pairs over labelled groups."""
        images, labels, _, _ = stack_groups(groups)
        return float((self.predict(images) == labels.numpy()).mean())


def stack_groups(groups: Sequence[Group]) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[int, ...]]:
    """Concatenate groups into uint8/float N x C x H x W images and global class labels.

    Parameters
    ----------
    groups
        ``(name, images, labels)`` per group; images B x H x W or B x C x H x W (uint8 or
        float in [0, 1]), labels integers from 0.  Group ``g`` gets ``max(label) + 1`` classes.

    Returns
    -------
    images, labels, names, offsets
        Stacked images (layout B x C x H x W), int64 global labels, group names, class offsets.
    """
    if not groups:
        raise ValueError("need at least one group")
    offsets, labels, next_offset = [], [], 0
    for _, _, group_labels in groups:
        local = torch.as_tensor(np.asarray(group_labels), dtype=torch.int64)
        labels.append(local + next_offset)
        offsets.append(next_offset)
        next_offset += int(local.max()) + 1
    images = _stack_images([g[1] for g in groups])
    return images, torch.cat(labels), tuple(g[0] for g in groups), tuple(offsets)


def _stack_images(arrays: Sequence[ImageArray]) -> torch.Tensor:
    """Concatenate image arrays as B x C x H x W: uint8 if all are uint8, else float [0, 1]."""
    tensors = [torch.as_tensor(array) for array in arrays]
    if all(t.dtype == torch.uint8 for t in tensors):
        return torch.cat([t.unsqueeze(1) if t.ndim == 3 else t for t in tensors])
    return torch.cat([as_float_images(t) for t in tensors])


def _train_epoch(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    bar: tqdm,
) -> None:
    """Run one pass over shuffled data with cross-entropy."""
    order = torch.randperm(len(labels), generator=generator)
    module.train()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        loss = nn.functional.cross_entropy(module(as_float_images(images[index])), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.update(len(index))


def train_domain_classifier(
    groups: Sequence[Group], *, epochs: int = 2, seed: int = 0, batch_size: int = 128, progress: bool = True
) -> DomainClassifier:
    """Train the domain classifier on the union of the groups' training sets.

    AdamW with a one-cycle learning-rate schedule (peak :data:`LEARNING_RATE`), no
    augmentation.  Deterministic given ``seed`` (and the number of torch threads): weights
    and shuffling draw from a forked RNG seeded with ``seed``.

    Parameters
    ----------
    groups
        ``(name, images, labels)`` per group, see :func:`stack_groups`.
    epochs, seed, batch_size
        Training length, randomness and batch size.
    progress
        Show a tqdm bar.

    Returns
    -------
    DomainClassifier
        The trained classifier, in eval mode.
    """
    images, labels, names, offsets = stack_groups(groups)
    num_classes = int(labels.max()) + 1
    steps = epochs * math.ceil(len(labels) / batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_domain_cnn(images.shape[1], images.shape[-1], num_classes)
        optimizer = torch.optim.AdamW(module.parameters(), lr=LEARNING_RATE)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, LEARNING_RATE, total_steps=steps)
        generator = torch.Generator().manual_seed(seed)
        with tqdm(total=epochs * len(labels), unit="img", desc="classifier", disable=not progress) as bar:
            for _ in range(epochs):
                _train_epoch(
                    module, optimizer, scheduler, images, labels, batch_size=batch_size, generator=generator, bar=bar
                )
    return DomainClassifier(module.eval(), names, offsets, num_classes, images.shape[1], images.shape[-1])


def classifier_key(groups: Sequence[Group], *, epochs: int, seed: int, batch_size: int) -> str:
    """sha256 naming a classifier by its data, hyperparameters and architecture version."""
    digest = hashlib.sha256(f"{ARCH_VERSION}|{LEARNING_RATE}|{epochs}|{seed}|{batch_size}".encode())
    for name, images, labels in groups:
        digest.update(f"|{name}|{array_sha256(images)}|{array_sha256(labels)}".encode())
    return digest.hexdigest()


def save_classifier(classifier: DomainClassifier, path: str | os.PathLike[str]) -> Path:
    """Save weights and class layout atomically (temporary file, then os.replace)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": classifier.module.state_dict(),
        "arch": ARCH_VERSION,
        "group_names": list(classifier.group_names),
        "class_offsets": list(classifier.class_offsets),
        "num_classes": classifier.num_classes,
        "in_channels": classifier.in_channels,
        "image_size": classifier.image_size,
    }
    return atomic_write(target, lambda handle: torch.save(payload, handle))


def load_classifier(path: str | os.PathLike[str]) -> DomainClassifier:
    """Load a classifier written by :func:`save_classifier`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("arch") != ARCH_VERSION:
        raise ValueError(f"{path} holds architecture {payload.get('arch')!r}, not {ARCH_VERSION}")
    module = build_domain_cnn(payload["in_channels"], payload["image_size"], payload["num_classes"])
    module.load_state_dict(payload["state_dict"])
    return DomainClassifier(
        module.eval(),
        tuple(payload["group_names"]),
        tuple(payload["class_offsets"]),
        payload["num_classes"],
        payload["in_channels"],
        payload["image_size"],
    )


def load_or_train(
    groups: Sequence[Group],
    *,
    epochs: int = 2,
    seed: int = 0,
    batch_size: int = 128,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> DomainClassifier:
    """Load the classifier for these data and hyperparameters from the cache, or train it.

    Parameters
    ----------
    groups, epochs, seed, batch_size, progress
        As for :func:`train_domain_classifier`; all but ``progress`` enter the cache key.
    cache_dir
        Folder of cached weights; ``<default cache>/classifiers`` when None.

    Returns
    -------
    DomainClassifier
        The cached or freshly trained (and then cached) classifier.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "classifiers"
    key = classifier_key(groups, epochs=epochs, seed=seed, batch_size=batch_size)
    path = root / f"domain-{key[:20]}.pt"
    if path.is_file():
        return load_classifier(path)
    classifier = train_domain_classifier(groups, epochs=epochs, seed=seed, batch_size=batch_size, progress=progress)
    save_classifier(classifier, path)
    return classifier


def _group_mask(pred_classes: np.ndarray, group_index: int, classifier: DomainClassifier) -> tuple[np.ndarray, range]:
    """Predictions as an array and which of them fall into group ``group_index``."""
    classes = classifier.group_classes(group_index)
    predictions = np.asarray(pred_classes, dtype=np.int64)
    return (predictions >= classes.start) & (predictions < classes.stop), classes


def group_purity(pred_classes: np.ndarray, group_index: int, classifier: DomainClassifier) -> float:
    """Share of a group's samples that the classifier puts into that group's classes.

    Parameters
    ----------
    pred_classes
        Predicted class indices of samples generated for group ``group_index``.
    group_index
        The group the samples were generated for.
    classifier
        Supplies the class layout.

    Returns
    -------
    float
        In [0, 1]; NaN for no samples.
    """
    inside, _ = _group_mask(pred_classes, group_index, classifier)
    return float(inside.mean()) if inside.size else float("nan")


def class_coverage_entropy(
    pred_classes: np.ndarray, group_index: int, classifier: DomainClassifier, *, normalize: bool = False
) -> float:
    """Entropy of the predicted within-group class histogram of a group's samples.

    Samples predicted outside the group's classes are left out (:func:`group_purity`
    counts them).

    Parameters
    ----------
    pred_classes
        Predicted class indices of samples generated for group ``group_index``.
    group_index
        The group the samples were generated for.
    classifier
        Supplies the class layout.
    normalize
        Divide by ``log(number of classes of the group)`` so that 1 means uniform coverage.

    Returns
    -------
    float
        Entropy in nats (or normalised); 0.0 when no sample falls inside the group.
    """
    inside, classes = _group_mask(pred_classes, group_index, classifier)
    predictions = np.asarray(pred_classes, dtype=np.int64)[inside] - classes.start
    counts = np.bincount(predictions, minlength=len(classes))
    if counts.sum() == 0:
        return 0.0
    share = counts[counts > 0] / counts.sum()
    entropy = float(-(share * np.log(share)).sum())
    return entropy / math.log(len(classes)) if normalize and len(classes) > 1 else entropy


def group_scores(classifier: DomainClassifier, images: ImageArray, group_index: int) -> dict[str, float]:
    """Purity and class coverage (raw and normalised) of images generated for one group."""
    predictions = classifier.predict(images)
    return {
        "purity": group_purity(predictions, group_index, classifier),
        "coverage_entropy": class_coverage_entropy(predictions, group_index, classifier),
        "coverage_entropy_normalised": class_coverage_entropy(predictions, group_index, classifier, normalize=True),
    }
