"""Training losses: MLE (docs/ORIGINAL.md §4.3) and self-critical (§4.4)."""
from __future__ import annotations

import torch
from torch import Tensor


def language_model_loss(logprobs: Tensor, target: Tensor, mask: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Token-averaged NLL over the whole batch: -sum(log p(target) * mask) / sum(mask).

    With ``label_smoothing`` = eps > 0, the KL divergence to a target with 1 - eps on the
    true class and eps / (classes - 1) on every other class, averaged over unmasked tokens,
    as the original's ``LabelSmoothing``.
    """
    t = min(logprobs.size(1), target.size(1))
    logprobs, target, mask = logprobs[:, :t], target[:, :t], mask[:, :t].to(logprobs.dtype)
    if label_smoothing <= 0:
        nll = -logprobs.gather(2, target.unsqueeze(2)).squeeze(2)
        return (nll * mask).sum() / mask.sum()
    n_classes = logprobs.size(-1)
    smooth = torch.full_like(logprobs, label_smoothing / (n_classes - 1))
    smooth.scatter_(2, target.unsqueeze(2), 1.0 - label_smoothing)
    kl = (torch.xlogy(smooth, smooth) - smooth * logprobs).sum(-1)
    return (kl * mask).sum() / mask.sum()


def self_critical_loss(logprobs: Tensor, seq: Tensor, advantage: Tensor) -> Tensor:
    """The original's ``RewardCriterion``: -sum(log p(w_t) * A * m_t) / sum(m_t) over the batch.

    ``logprobs`` (R, L) are the sampled tokens' log-probabilities, ``seq`` (R, L) the tokens,
    ``advantage`` (R,) each row's reward minus baseline. m_t is 1 up to and including the
    first EOS (t = 0 always, then 1 iff w_{t-1} > 0); the sum runs over all tokens of all rows.
    """
    if logprobs.shape != seq.shape or advantage.shape != seq.shape[:1]:
        raise ValueError(f"need logprobs and seq of one shape (R, L) and advantage (R,); got "
                         f"{tuple(logprobs.shape)}, {tuple(seq.shape)}, {tuple(advantage.shape)}")
    mask = torch.cat([torch.ones_like(seq[:, :1]), (seq[:, :-1] > 0).to(seq.dtype)], 1).to(logprobs.dtype)
    return -(logprobs * advantage.to(logprobs.dtype).unsqueeze(1) * mask).sum() / mask.sum()
