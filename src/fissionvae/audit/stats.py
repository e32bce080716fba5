"""The audit's statistics, each defined once: AUC, TPR at a fixed FPR, Mann-Whitney z, data-copying Z_U."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import rankdata


def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(score of a member > score of a non-member) + half the ties: the area under the ROC curve.

    Higher scores mean "member". 0.5 = the scores carry no membership signal.
    """
    members, nonmembers = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("AUC needs at least one member and one non-member score")
    ranks = rankdata(np.concatenate([members, nonmembers]))  # average ranks for ties
    n1, n0 = len(members), len(nonmembers)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> dict:
    """True-positive rate of the best threshold whose false-positive rate is at most ``fpr``.

    The attack says "member" for scores strictly above the threshold; the threshold is the
    (k+1)-th largest non-member score with k = floor(fpr * n0), so at most k non-members pass.
    ``resolvable`` is false when n0 * fpr < 1: then only the threshold "above every non-member"
    (FPR 0) is possible and the number is a lower bound of the attack at that FPR.
    """
    members, nonmembers = np.asarray(members, np.float64), np.asarray(nonmembers, np.float64)
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1); got {fpr}")
    k = math.floor(fpr * len(nonmembers) + 1e-9)
    threshold = np.sort(nonmembers)[::-1][min(k, len(nonmembers) - 1)]
    return {
        "fpr": fpr,
        "tpr": float((members > threshold).mean()),
        "achieved_fpr": float((nonmembers > threshold).mean()),
        "resolvable": len(nonmembers) * fpr >= 1.0,
    }


def attack_report(members: np.ndarray, nonmembers: np.ndarray) -> dict:
    """AUC and TPR at 1% and 0.1% FPR of one membership score (higher = member)."""
    return {
        "members": len(members),
        "nonmembers": len(nonmembers),
        "auc": roc_auc(members, nonmembers),
        "tpr_at_1pct_fpr": tpr_at_fpr(members, nonmembers, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at_fpr(members, nonmembers, 0.001),
    }


def mann_whitney_z(generated: np.ndarray, test: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of ``generated`` against ``test`` (no continuity correction).

    U counts the pairs (generated, test) with generated > test, ties counted one half; under the
    null (both from one distribution) its mean is m n / 2 and its variance m n (m + n + 1) / 12.
    Negative z: the generated values are systematically smaller.
    """
    m, n = len(generated), len(test)
    u = roc_auc(generated, test) * m * n
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def nearest(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index."""
    queries, reference = queries.double().flatten(1), reference.double().flatten(1)
    dists, idx = [], []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], reference, compute_mode="donot_use_mm_for_euclid_dist")
        best = d.min(dim=1)
        dists.append(best.values)
        idx.append(best.indices)
    if not dists:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def data_copying_statistic(
    train: np.ndarray, test: np.ndarray, generated: np.ndarray, cells: int, seed: int, min_generated: int = 20
) -> dict:
    """Meehan, Chaudhuri and Dasgupta (AISTATS 2020)'s data-copying statistic C_T.

    The training set T is partitioned into ``cells`` cells by k-means (seeded); held-out test
    points P_n and generated points Q_m are placed in the cell of their nearest centroid. In each
    cell pi, L_pi(P) and L_pi(Q) are the distances of its test and generated points to their
    nearest training point of that cell, and Z_U(pi) is the Mann-Whitney z of L_pi(Q) against
    L_pi(P). C_T is the average of Z_U(pi) weighted by the share of test points in pi, over the
    cells holding at least ``min_generated`` generated points (the paper's tau; sparse cells give
    no reliable z), renormalised to those cells. C_T << 0 (e.g. below -3): generated points are
    closer to the training set than fresh data are: data copying. C_T >> 0: underfitting.
    """
    from sklearn.cluster import KMeans

    train, test, generated = (np.asarray(a, np.float64).reshape(len(a), -1) for a in (train, test, generated))
    k = max(1, min(cells, len(train)))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed % 2**32).fit(train)
    t_cell, p_cell, q_cell = km.labels_, km.predict(test), km.predict(generated)
    per_cell, weight, total = [], 0.0, 0.0
    for c in range(k):
        ref = torch.from_numpy(train[t_cell == c])
        p, q = test[p_cell == c], generated[q_cell == c]
        entry: dict[str, float] = {"cell": c, "train": len(ref), "test": len(p), "generated": len(q)}
        if len(q) >= min_generated and len(p) > 0:
            entry["z_u"] = mann_whitney_z(nearest(torch.from_numpy(q), ref)[0], nearest(torch.from_numpy(p), ref)[0])
            share = len(p) / len(test)
            weight += share
            total += share * entry["z_u"]
        per_cell.append(entry)
    return {
        "c_t": total / weight if weight > 0 else None,
        "cells": k,
        "cells_used": sum("z_u" in e for e in per_cell),
        "test_share_used": weight,
        "min_generated_per_cell": min_generated,
        "per_cell": per_cell,
    }
