"""Recall@K and rank statistics for paired retrieval (item i of the rows matches item i of the columns).

Follows the original ``tools/eval_clip_retrieval.compute_retrieval``: the rank of a query is the
0-based position of its match when the row is sorted by decreasing similarity; R@K is the share
(in %) of queries with rank < K, ``medr = floor(median rank) + 1``, ``meanr = mean rank + 1`` and
``sum = R@1 + R@5 + R@10``. Ties are ranked pessimistically: the match is placed after every
other item with the same similarity (rank = number of other items scored at least as high), so
identical texts (e.g. all-empty captions) cannot score hits. The original's ``np.argsort``
left tie order unspecified.
"""
from __future__ import annotations

import numpy as np

RECALL_KS = (1, 5, 10, 50)


def _as_array(sim) -> np.ndarray:
    if hasattr(sim, "detach"):  # torch tensor, possibly on an accelerator
        sim = sim.detach().cpu().numpy()
    return np.asarray(sim)


def retrieval_ranks(sim) -> np.ndarray:
    """0-based rank of the matching column for every row of a square similarity matrix."""
    sim = _as_array(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] == 0:
        raise ValueError(f"need a non-empty square similarity matrix, got shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity matrix contains NaN or infinite values")
    matched = np.diagonal(sim)[:, None]
    return (sim >= matched).sum(axis=1) - 1


def retrieval_metrics(sim) -> dict[str, float]:
    """R@1/5/10/50 (%), medr, meanr and sum, with the rows of ``sim`` as queries."""
    ranks = retrieval_ranks(sim)
    out = {f"R@{k}": 100.0 * float((ranks < k).mean()) for k in RECALL_KS}
    out["medr"] = float(np.floor(np.median(ranks)) + 1)
    out["meanr"] = float(ranks.mean() + 1)
    out["sum"] = out["R@1"] + out["R@5"] + out["R@10"]
    return out


def image_text_retrieval(sim) -> dict[str, dict[str, float]]:
    """Both directions from an images x texts matrix: ``i2t`` (image queries) and ``t2i`` (text queries).

    The paper reports ``t2i``.
    """
    sim = _as_array(sim)
    return {"i2t": retrieval_metrics(sim), "t2i": retrieval_metrics(sim.T)}
