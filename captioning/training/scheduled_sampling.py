"""Scheduled sampling: the original's ``ss_prob`` schedule and its mixing of sampled tokens into
teacher forcing.

Schedule (the original's epoch-start callback): from the first epoch *after*
``scheduled_sampling_start`` (>= 0), ``ss_prob = min(increase_prob * floor((epoch - start) /
increase_every), max_prob)``; otherwise 0.

Mixing (the original's ``AttModel._forward``): the captions are decoded position by position;
at every position ``i >= 1`` of every row, with probability ``ss_prob``, the input token is
not the ground truth ``seq[:, i]`` but a token sampled from the model's own (detached)
distribution predicted at position ``i - 1``. The original applied this to its recurrent
captioners and computed but ignored ``ss_prob`` in its transformer, whose teacher forcing is one
parallel pass; here the transformer honours it with the same rule, decoding step by step with
the key/value cache. With ``ss_prob == 0`` (every shipped config) training uses the parallel
pass, so nothing changes.
"""
from __future__ import annotations

import torch
from torch import Tensor

from captioning.models.transformer import TransformerCaptioner


def ss_prob(epoch: int, start: int, increase_every: int, increase_prob: float, max_prob: float) -> float:
    """The scheduled-sampling probability of ``epoch`` (0-based)."""
    if start < 0 or epoch <= start:
        return 0.0
    if increase_every < 1:
        raise ValueError(f"scheduled_sampling_increase_every must be >= 1, got {increase_every}")
    return min(increase_prob * ((epoch - start) // increase_every), max_prob)


def teacher_forcing_with_sampling(
    model: TransformerCaptioner,
    att_feats: Tensor,
    att_masks: Tensor | None,
    seq: Tensor,
    prob: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Log-probabilities (R, T, V+1) of teacher forcing where each input token at position >= 1 is,
    with probability ``prob``, replaced by a sample of the previous position's prediction; also
    returns the tokens actually fed (R, T).

    ``seq`` is (R, T) or (B, S, T) with column 0 = BOS, rows i*S + j belonging to image i. Each
    image is encoded once and its memory shared by its captions, as the original's recurrent
    models did. Positions after the last one holding a token in any row are not decoded (their
    log-probabilities are 0), as in the original.
    """
    if seq.dim() == 3:
        seq = seq.reshape(-1, seq.size(-1))
    b = att_feats.size(0)
    if seq.size(0) % b:
        raise ValueError(f"seq rows ({seq.size(0)}) must be a multiple of the batch size {b}")
    enc = model.prepare_decoding(model.encode(att_feats, att_masks).repeat_interleave(seq.size(0) // b))
    prefix = model.start(enc)
    steps: list[Tensor] = []
    fed = seq.clone()
    for i in range(seq.size(1)):
        if i >= 1:
            if not seq[:, i].any():
                break
            token = seq[:, i]
            if prob > 0:
                swap = torch.rand(seq.size(0), device=seq.device, generator=generator) < prob
                if swap.any():
                    sampled = torch.multinomial(steps[-1].detach().exp(), 1, generator=generator).squeeze(1)
                    token = torch.where(swap, sampled, token)
            fed[:, i] = token
            prefix = prefix.append(token)
        logprobs, prefix = model.step(enc, prefix)
        steps.append(logprobs)
    out = torch.stack(steps, 1)
    if out.size(1) < seq.size(1):
        out = torch.cat([out, out.new_zeros(out.size(0), seq.size(1) - out.size(1), out.size(2))], 1)
    return out, fed
