"""Greedy decoding and sampling (multinomial, temperature, top-k, top-p) with the original's constraints.

Every row decodes at most ``max_length`` tokens (possibly without EOS); once a row emits 0 all
its later tokens are 0 and their log-probabilities 0. Rows are grouped by image: row i*n + k is
sample k of image i.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from captioning.models.transformer import BOS_IDX, EOS_IDX, PAD_IDX, TransformerCaptioner

TRIGRAM_PENALTY = -0.693 * 2.0  # added once per earlier occurrence of the same trigram
UNK_PENALTY = 1000.0


@dataclass
class DecodeOutput:
    """``seq`` (R, L) int64; ``logprobs`` (R, L) log-probabilities of the chosen tokens (with
    gradients when decoding under autograd); ``full_logprobs`` (R, L, V+1) only when asked;
    ``scores`` (R,) the length-penalised beam scores (beam search only)."""

    seq: Tensor
    logprobs: Tensor
    full_logprobs: Tensor | None = None
    scores: Tensor | None = None


def as_id_tensor(ids: Sequence[int] | Tensor | None, device: torch.device) -> Tensor | None:
    if ids is None:
        return None
    return torch.as_tensor(ids if torch.is_tensor(ids) else sorted(ids), dtype=torch.long, device=device)


def check_length(model: TransformerCaptioner, max_length: int | None) -> int:
    """``max_length`` or the model's default, validated against the positional table."""
    length = model.max_length if max_length is None else max_length
    limit = model.model.tgt_embed[1].pe.size(1)
    if not 1 <= length < limit:
        raise ValueError(f"max_length must be in 1..{limit - 1}, got {length}")
    return length


def trigram_counts(prev: Tensor, n_tokens: int) -> Tensor:
    """(R, n_tokens): for each row, how often each token followed the row's last two tokens earlier
    in ``prev`` (R, t). All rows are handled (the original only looked at the first B rows)."""
    counts = prev.new_zeros(prev.size(0), n_tokens, dtype=torch.float32)
    t = prev.size(1)
    if t < 3:
        return counts
    match = (prev[:, : t - 2] == prev[:, t - 2 : t - 1]) & (prev[:, 1 : t - 1] == prev[:, t - 1 :])
    return counts.scatter_add_(1, prev[:, 2:], match.float())


def constrain(
    logprobs: Tensor,
    prev: Tensor,
    *,
    decoding_constraint: bool = False,
    bad_ending_ids: Tensor | None = None,
    block_trigrams: bool = False,
    unk_idx: int | None = None,
) -> Tensor:
    """Apply the optional decoding constraints to (R, V+1) log-probs given earlier tokens ``prev`` (R, t).

    * decoding_constraint: the previous token gets -inf (no immediate repeat);
    * bad_ending_ids: EOS gets -inf after one of these tokens;
    * block_trigrams: -0.693*2 per earlier occurrence of the trigram that the token would complete;
    * unk_idx: the UNK token's log-prob is lowered by 1000.
    """
    t = prev.size(1)
    if decoding_constraint and t > 0:
        repeat = torch.zeros_like(logprobs, dtype=torch.bool).scatter_(1, prev[:, -1:], True)
        logprobs = logprobs.masked_fill(repeat, float("-inf"))
    if bad_ending_ids is not None and t > 0:
        after_bad = torch.isin(prev[:, -1], bad_ending_ids)
        no_eos = torch.zeros_like(logprobs, dtype=torch.bool)
        no_eos[:, EOS_IDX] = after_bad
        logprobs = logprobs.masked_fill(no_eos, float("-inf"))
    if block_trigrams and t >= 3:
        logprobs = logprobs + trigram_counts(prev, logprobs.size(1)).to(logprobs.dtype) * TRIGRAM_PENALTY
    if unk_idx is not None:
        if not 0 < unk_idx < logprobs.size(1):
            raise ValueError(f"unk_idx={unk_idx} is not a word index (1..{logprobs.size(1) - 1})")
        penalty = torch.zeros_like(logprobs)
        penalty[:, unk_idx] = UNK_PENALTY
        logprobs = logprobs - penalty
    return logprobs


def sampling_logits(logprobs: Tensor, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None) -> Tensor:
    """Logits of the distribution to draw from: ``logprobs / temperature``, then optionally only
    the ``top_k`` best tokens, or the smallest set whose probability reaches ``top_p`` (the first
    token always kept), renormalised; excluded tokens get -inf."""
    x = logprobs / temperature
    if top_k is not None:
        values, indices = x.topk(top_k, dim=1)
        return torch.full_like(x, float("-inf")).scatter(1, indices, values)
    if top_p is not None:
        probs, indices = x.softmax(1).sort(1, descending=True)
        below = probs.cumsum(1) < top_p
        keep = torch.cat([torch.ones_like(below[:, :1]), below[:, :-1]], 1)
        probs = probs * keep.to(probs.dtype)
        probs = probs / probs.sum(1, keepdim=True)
        return x.scatter(1, indices, probs.log())
    return x


def _check_sampling_args(method: str, sample_n: int, temperature: float, top_k: int | None,
                         top_p: float | None) -> None:
    if method not in ("greedy", "sample"):
        raise ValueError(f"method must be 'greedy' or 'sample', got {method!r}")
    if sample_n < 1:
        raise ValueError(f"sample_n must be >= 1, got {sample_n}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_p is not None:
        raise ValueError("give top_k or top_p, not both")
    if method == "greedy" and (top_k is not None or top_p is not None):
        raise ValueError("top_k/top_p apply to method='sample' only")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p < 1:
        raise ValueError(f"top_p must be in (0, 1), got {top_p}")


def sample(
    model: TransformerCaptioner,
    att_feats: Tensor,
    att_masks: Tensor | None = None,
    *,
    method: str = "greedy",
    sample_n: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    max_length: int | None = None,
    decoding_constraint: bool = False,
    bad_ending_ids: Sequence[int] | Tensor | None = None,
    block_trigrams: bool = False,
    unk_idx: int | None = None,
    use_cache: bool = True,
    return_full_logprobs: bool = False,
    generator: torch.Generator | None = None,
) -> DecodeOutput:
    """Decode ``sample_n`` captions per image, greedily (argmax) or by drawing from
    ``sampling_logits`` (``method='sample'``).

    The returned per-token log-probs are gathered from the constrained distribution *before*
    temperature/top-k/top-p (what the original's SCST loss uses); ``full_logprobs`` holds those
    distributions. Gradients flow unless called under ``torch.no_grad()``. ``use_cache=False``
    re-decodes the whole prefix at every step like the original (same numbers in eval mode; in
    train mode the original redraws dropout on earlier positions at every step, the cached path
    draws it once per position, as teacher forcing does). The caller sets train/eval mode.
    """
    _check_sampling_args(method, sample_n, temperature, top_k, top_p)
    length = check_length(model, max_length)
    bad = as_id_tensor(bad_ending_ids, att_feats.device)
    enc = model.prepare_decoding(model.encode(att_feats, att_masks), use_cache).repeat_interleave(sample_n)
    prefix = model.start(enc, use_cache)
    rows = enc.rows
    seq = torch.zeros(rows, length, dtype=torch.long, device=att_feats.device)
    unfinished = torch.ones(rows, dtype=torch.bool, device=att_feats.device)
    token_lps, full = [], []
    for t in range(length):
        logprobs, prefix = model.step(enc, prefix)
        logprobs = constrain(logprobs, seq[:, :t], decoding_constraint=decoding_constraint,
                             bad_ending_ids=bad, block_trigrams=block_trigrams, unk_idx=unk_idx)
        if method == "greedy":
            it = logprobs.detach().argmax(1)
        else:
            probs = sampling_logits(logprobs.detach(), temperature, top_k, top_p).softmax(1)
            it = torch.multinomial(probs, 1, generator=generator)[:, 0]
        it = it.masked_fill(~unfinished, PAD_IDX)
        seq[:, t] = it
        token_lps.append(torch.where(unfinished, logprobs.gather(1, it.unsqueeze(1))[:, 0], 0.0))
        if return_full_logprobs:
            full.append(torch.where(unfinished.unsqueeze(1), logprobs, 0.0))
        unfinished = unfinished & (it != EOS_IDX)
        if not unfinished.any():
            break
        prefix = prefix.append(it)
    pad = length - len(token_lps)
    lps = F.pad(torch.stack(token_lps, 1), (0, pad))
    full_lps = F.pad(torch.stack(full, 1), (0, 0, 0, pad)) if return_full_logprobs else None
    return DecodeOutput(seq, lps, full_lps)


def sequence_logprobs(model: TransformerCaptioner, att_feats: Tensor, att_masks: Tensor | None, seq: Tensor) -> Tensor:
    """Teacher-forced log-probabilities (R, L) of the tokens of ``seq`` (R, L), rows grouped by image
    (R = B * n), in one parallel pass that encodes each image once; 0 after each row's first EOS.

    Given the same model mode these are the ``logprobs`` that :func:`sample` (no constraints)
    returns for those tokens; in eval mode they are equal. In train mode the pass draws its own
    dropout masks, not those under which the tokens were sampled (SCST's ``scst_rescore``).
    """
    if seq.dim() != 2:
        raise ValueError(f"seq must be (R, L), got shape {tuple(seq.shape)}")
    check_length(model, seq.size(1))
    inputs = torch.cat([seq.new_full((seq.size(0), 1), BOS_IDX), seq[:, :-1]], 1)
    logprobs = model(att_feats, att_masks, inputs, encode_once=True).gather(2, seq.unsqueeze(2))[..., 0]
    alive = torch.cat([torch.ones_like(seq[:, :1], dtype=torch.bool), seq[:, :-1] != EOS_IDX], 1).cummin(1).values
    return torch.where(alive, logprobs, 0.0)
