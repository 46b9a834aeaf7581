"""The contrastive CLIP loss (with optional extra negative texts) and the grammar head's statistics."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(queries: Tensor, candidates: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Mean cross-entropy of each query (row i) over all candidates, candidate i being its match.

    Both sides are L2-normalised here; ``candidates`` may have more rows than ``queries``.
    """
    if queries.dim() != 2 or candidates.dim() != 2 or candidates.shape[0] < queries.shape[0]:
        raise ValueError(f"need (B, D) queries and (>= B, D) candidates, got {tuple(queries.shape)} and "
                         f"{tuple(candidates.shape)}")
    logits = logit_scale * F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).t()
    return F.cross_entropy(logits, torch.arange(queries.shape[0], device=queries.device))


def clip_loss(image_feats: Tensor, text_feats: Tensor, logit_scale: Tensor | float,
              neg_text_feats: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over B matched (image, text) pairs (docs/ORIGINAL.md §6.2).

    Features are L2-normalised here; ``logit_scale`` is the multiplier itself (``exp`` of CLIP's
    parameter). The loss is the mean of the image-to-text and text-to-image cross-entropies with
    the matches on the diagonal. ``neg_text_feats`` (N, D), if given, are extra text candidates
    for every image (hard negatives, as NegCLIP and the original's ``joint_out`` mode): the
    image-to-text softmax runs over B + N texts, the text-to-image one over the B images.
    """
    if image_feats.shape != text_feats.shape or image_feats.dim() != 2:
        raise ValueError(f"need (B, D) image and text features, got {tuple(image_feats.shape)} and "
                         f"{tuple(text_feats.shape)}")
    candidates = text_feats if neg_text_feats is None else torch.cat([text_feats, neg_text_feats])
    return (info_nce(image_feats, candidates, logit_scale) + info_nce(text_feats, image_feats, logit_scale)) / 2


def grammar_counts(pred: Tensor, label: Tensor) -> dict[str, int]:
    """Confusion counts with class 1 ("grammatical") as the positive class.

    TP = grammatical predicted grammatical, FP = ungrammatical predicted grammatical,
    FN = grammatical predicted ungrammatical, TN = ungrammatical predicted ungrammatical.
    (The original swapped FP and FN, docs/ORIGINAL.md §10.15.)
    """
    pred, label = pred.bool(), label.bool()
    return {"TP": int((pred & label).sum()), "FP": int((pred & ~label).sum()),
            "FN": int((~pred & label).sum()), "TN": int((~pred & ~label).sum())}


def grammar_scores(counts: dict[str, int]) -> dict[str, float]:
    """Accuracy, precision, recall and F1 in % from :func:`grammar_counts` (0 where undefined)."""
    tp, fp, fn, tn = (counts[k] for k in ("TP", "FP", "FN", "TN"))
    total = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": 100.0 * (tp + tn) / total if total else 0.0, "precision": 100.0 * precision,
            "recall": 100.0 * recall, "f1": 100.0 * f1}
