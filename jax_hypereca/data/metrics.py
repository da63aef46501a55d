"""Click-prediction metrics in numpy: ROC AUC and log loss."""

from __future__ import annotations

import numpy as np


def _flat_pair(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in size: {labels.size} vs {scores.size}")
    return labels, scores


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``; tied values all get the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    _, inverse, counts = np.unique(values[order], return_inverse=True, return_counts=True)
    last_rank = np.cumsum(counts).astype(np.float64)
    group_rank = last_rank - (counts - 1) / 2.0
    ranks = np.empty(values.size, np.float64)
    ranks[order] = group_rank[inverse]
    return ranks


def auc(labels, scores) -> float:
    """ROC AUC of ``scores`` against binary ``labels`` (Mann-Whitney statistic).

    Ties in ``scores`` count one half (average ranks).  Returns ``nan`` when
    only one class is present, so an evaluation on a tiny set does not crash.
    """
    labels, scores = _flat_pair(labels, scores)
    positive = labels > 0.5
    n_pos = int(positive.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels, scores, *, from_logits: bool = False, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of ``labels`` in [0, 1].

    ``scores`` are probabilities (clipped to ``[eps, 1 - eps]``) or, with
    ``from_logits=True``, logits, evaluated without overflow as
    ``logaddexp(0, x) - y * x``.
    """
    labels, scores = _flat_pair(labels, scores)
    if labels.size == 0:
        return float("nan")
    if from_logits:
        losses = np.logaddexp(0.0, scores) - labels * scores
    else:
        p = np.clip(scores, eps, 1.0 - eps)
        losses = -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))
    return float(losses.mean())
