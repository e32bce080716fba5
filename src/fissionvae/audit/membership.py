"""Membership inference against a trained VAE: the loss-threshold attack and cross-group leakage.

The attack of Yeom et al. (CSF 2018): an image is called a member of the training set when the
model's loss on it is low. Our loss is the per-image negative ELBO from the model's own
``terms`` (averaged over ``elbo_samples`` posterior draws from the audit's seeded stream), so the
membership score is ``-neg_elbo``. Members are a client's training images, non-members the
held-out test images of the same group (never seen by any client).

Cross-group leakage: group B's branch (its decoder and prior; B's clients never held group A's
images) scores A's training images and A's test images; the AUC of that score as a membership
signal says whether A's membership shows through B's branch (0.5: it does not).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from fissionvae.audit.stats import attack_report
from fissionvae.data.federated import ClientData
from fissionvae.models.vae import FissionVAE
from fissionvae.seeding import numpy_rng, torch_generator


def subset(images: Tensor, size: int, seed: int, *keys: int) -> Tensor:
    """A seeded subset of at most ``size`` images (the ``audit`` stream, keyed by ``keys``), in original order."""
    if size >= len(images):
        return images
    return images[np.sort(numpy_rng(seed, "audit", *keys).choice(len(images), size=size, replace=False))]


@torch.inference_mode()
def neg_elbo_per_image(
    model: FissionVAE, images: Tensor, group: int, generator: torch.Generator, samples: int = 1, batch: int = 500
) -> np.ndarray:
    """Per-image negative ELBO in nats under ``group``'s prior and branch, averaged over ``samples`` draws."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(device)
        gids = torch.full((len(x),), group, dtype=torch.int64, device=device)
        draws = [model.terms(x, gids, generator)["neg_elbo"].double().cpu() for _ in range(samples)]
        out.append(torch.stack(draws).mean(0))
    return torch.cat(out).numpy() if out else np.zeros(0)


def loss_threshold_attack(
    model: FissionVAE,
    clients: list[ClientData],
    test_images: list[Tensor],
    group_names: list[str],
    seed: int,
    max_train: int,
    elbo_samples: int,
    progress: bool = False,
) -> dict:
    """AUC and TPR at 1% / 0.1% FPR per client (its images of each group) and per group (all its clients).

    Each group's non-members are the same ``max_train``-subset of its test images for every client.
    """
    nonmember = {
        gi: -neg_elbo_per_image(
            model, subset(x, max_train, seed, 1, gi), gi, torch_generator(seed, "audit", 2, gi), elbo_samples
        )
        for gi, x in enumerate(test_images)
    }
    per_client: dict[str, dict] = {}
    member_scores: dict[int, list[np.ndarray]] = {gi: [] for gi in nonmember}
    for client in tqdm(clients, desc="membership inference", unit="client", disable=not progress):
        for gi in client.groups:
            own = client.images[client.group_ids == gi]
            scores = -neg_elbo_per_image(
                model,
                subset(own, max_train, seed, 3, client.client_id, gi),
                gi,
                torch_generator(seed, "audit", 4, client.client_id, gi),
                elbo_samples,
            )
            member_scores[gi].append(scores)
            key = str(client.client_id) if len(client.groups) == 1 else f"{client.client_id}/{group_names[gi]}"
            per_client[key] = {"group": group_names[gi]} | attack_report(scores, nonmember[gi])
    per_group = {
        group_names[gi]: attack_report(np.concatenate(parts), nonmember[gi])
        for gi, parts in member_scores.items()
        if parts
    }
    return {"score": "-neg_elbo", "elbo_samples": elbo_samples, "per_client": per_client, "per_group": per_group}


def cross_group_leakage(
    model: FissionVAE,
    train_images: list[Tensor],
    test_images: list[Tensor],
    group_names: list[str],
    seed: int,
    max_train: int,
    elbo_samples: int,
    progress: bool = False,
) -> dict:
    """For every ordered pair (A, B), A != B: the membership AUC of A's images scored by B's branch.

    Also the AUC of A's own branch on the same images, for comparison, and the mean negative ELBO
    B's branch gives A's members and non-members. Needs per-group decoder branches (+D models).
    """
    k = len(group_names)
    if len(model.branches) < 2:
        return {"skipped": "the model has one shared decoder (no +D branches): there is no other group's branch"}
    pairs: dict[str, dict] = {}
    for a in tqdm(range(k), desc="cross-group leakage", unit="group", disable=not progress):
        members = subset(train_images[a], max_train, seed, 5, a)
        nonmembers = subset(test_images[a], max_train, seed, 1, a)
        scores = {}
        for b in range(k):
            scores[b] = [
                -neg_elbo_per_image(model, x, b, torch_generator(seed, "audit", 6 + j, a, b), elbo_samples)
                for j, x in enumerate((members, nonmembers))
            ]
        for b in range(k):
            if b == a:
                continue
            report = attack_report(*scores[b])
            pairs[f"{group_names[a]}->{group_names[b]}"] = {
                "images_of": group_names[a],
                "branch_of": group_names[b],
                "auc": report["auc"],
                "own_branch_auc": attack_report(*scores[a])["auc"],
                "members": report["members"],
                "nonmembers": report["nonmembers"],
                "mean_neg_elbo_members": float(-scores[b][0].mean()),
                "mean_neg_elbo_nonmembers": float(-scores[b][1].mean()),
            }
    return {"score": "-neg_elbo under the other group's prior and branch", "pairs": pairs}
