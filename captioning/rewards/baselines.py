"""Self-critical baselines (docs/ORIGINAL.md §4.4): the greedy caption's score, or the mean score of the
other samples of the same image (leave-one-out, the "new self-critical" of Luo 2020)."""
from __future__ import annotations

from torch import Tensor


def greedy_baseline(greedy_scores: Tensor, sample_n: int) -> Tensor:
    """(B,) scores of the greedy captions -> (B, K) baseline, the same for the K samples of an image."""
    if greedy_scores.dim() != 1:
        raise ValueError(f"greedy_scores must be (B,), got shape {tuple(greedy_scores.shape)}")
    return greedy_scores[:, None].expand(-1, sample_n)


def leave_one_out_baseline(sample_scores: Tensor) -> Tensor:
    """(B, K) sample scores -> (B, K): for sample k, the mean score of the image's other K - 1 samples."""
    if sample_scores.dim() != 2:
        raise ValueError(f"sample_scores must be (B, K), got shape {tuple(sample_scores.shape)}")
    k = sample_scores.size(1)
    if k < 2:
        raise ValueError("the leave-one-out baseline (sc_baseline: mean) needs train_sample_n >= 2")
    return (sample_scores.sum(1, keepdim=True) - sample_scores) / (k - 1)
