"""Batched beam search with the original's finishing rules (no diverse groups).

Per step, every beam is extended by every token and the ``beam_size`` best running sums per image
survive. A beam whose new token is EOS (or that reaches ``max_length``) is recorded as finished
with score ``length_penalty(length, sum)`` and keeps running with 1000 subtracted from its sum.
Finished beams are ranked by score (ties: earlier first); the best ``sample_n`` are returned.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from captioning.models.decoding import DecodeOutput, as_id_tensor, check_length, constrain
from captioning.models.transformer import EOS_IDX, TransformerCaptioner

FINISHED_PENALTY = 1000.0


def length_penalty_fn(spec: str) -> Callable[[int, Tensor], Tensor]:
    """'' (none), 'wu_<alpha>' (sum / ((5+len)^a / 6^a)) or 'avg_<alpha>' (sum / len; alpha unused)."""
    if spec == "":
        return lambda length, logp: logp
    kind, _, alpha_text = spec.partition("_")
    try:
        alpha = float(alpha_text)
    except ValueError:
        raise ValueError(f"length_penalty must be '', 'wu_<float>' or 'avg_<float>', got {spec!r}") from None
    if kind == "wu":
        return lambda length, logp: logp / (((5 + length) ** alpha) / ((5 + 1) ** alpha))
    if kind == "avg":
        return lambda length, logp: logp / length
    raise ValueError(f"length_penalty must be '', 'wu_<float>' or 'avg_<float>', got {spec!r}")


def _pick_beams(x: Tensor, index: Tensor) -> Tensor:
    """x (B, k, ...) -> (B, K, ...) rows ``index`` (B, K) of dim 1."""
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand(-1, -1, *x.shape[2:]))


def _pad_to(x: Tensor, length: int) -> Tensor:
    """Zero-pad dim 2 of (B, K, t, ...) to ``length``."""
    pad = [0, 0] * (x.dim() - 3) + [0, length - x.size(2)]
    return F.pad(x, pad)


def _zero_after_eos(seq: Tensor) -> Tensor:
    """(R, L) bool: positions after the first EOS."""
    ended = (seq == EOS_IDX).long().cumsum(1)
    return F.pad(ended[:, :-1], (1, 0)) > 0


def beam_search(
    model: TransformerCaptioner,
    att_feats: Tensor,
    att_masks: Tensor | None = None,
    *,
    beam_size: int = 3,
    group_size: int = 1,
    sample_n: int = 1,
    length_penalty: str = "",
    temperature: float = 1.0,
    max_length: int | None = None,
    decoding_constraint: bool = False,
    bad_ending_ids: Sequence[int] | Tensor | None = None,
    block_trigrams: bool = False,
    unk_idx: int | None = None,
    use_cache: bool = True,
    return_full_logprobs: bool = False,
) -> DecodeOutput:
    """Beam search; returns the best ``sample_n`` (1 or ``beam_size``) finished beams per image,
    rows i*sample_n + k. ``unk_idx`` (suppress_UNK) is off when None; the original turned it on
    by default in beam search. ``block_trigrams`` was not available in the original beam search.
    ``temperature`` rescales every step's log-probs (the original skipped the first step).
    Tokens that follow an EOS inside a returned beam are set to 0 (with log-prob 0).
    """
    if group_size != 1:
        raise ValueError(f"diverse beam search (group_size={group_size}) is not implemented; use group_size=1")
    if beam_size < 1 or beam_size > model.vocab_size + 1:
        raise ValueError(f"beam_size must be in 1..{model.vocab_size + 1}, got {beam_size}")
    if sample_n not in (1, beam_size):
        raise ValueError(f"sample_n must be 1 or beam_size ({beam_size}), got {sample_n}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    penalty = length_penalty_fn(length_penalty)
    length = check_length(model, max_length)
    bad = as_id_tensor(bad_ending_ids, att_feats.device)
    rescale = (lambda lp: lp) if temperature == 1.0 else (lambda lp: F.log_softmax(lp / temperature, -1))

    enc = model.prepare_decoding(model.encode(att_feats, att_masks), use_cache)
    prefix = model.start(enc, use_cache)
    logprobs, prefix = model.step(enc, prefix)
    logprobs = rescale(logprobs)
    enc = enc.repeat_interleave(beam_size)

    b, n_tok, device = att_feats.size(0), logprobs.size(1), att_feats.device
    beam_seq = torch.zeros(b, 1, 0, dtype=torch.long, device=device)
    beam_lp = logprobs.new_zeros(b, 1, 0)
    beam_full = logprobs.new_zeros(b, 1, 0, n_tok) if return_full_logprobs else None
    beam_sum = logprobs.new_zeros(b, 1)
    done_score = logprobs.new_full((b, sample_n), float("-inf"))
    done_seq = torch.zeros(b, sample_n, length, dtype=torch.long, device=device)
    done_lp = logprobs.new_zeros(b, sample_n, length)
    done_full = logprobs.new_zeros(b, sample_n, length, n_tok) if return_full_logprobs else None

    for t in range(length):
        k = beam_sum.size(1)
        logprobs = constrain(logprobs, beam_seq.reshape(b * k, t), decoding_constraint=decoding_constraint,
                             bad_ending_ids=bad, block_trigrams=block_trigrams, unk_idx=unk_idx)
        dists = logprobs.view(b, k, n_tok)
        beam_sum, flat_ix = (beam_sum.unsqueeze(-1) + dists).view(b, -1).topk(beam_size, dim=1)
        parent, token = flat_ix // n_tok, flat_ix % n_tok
        parent_dists = _pick_beams(dists, parent)
        beam_seq = torch.cat([_pick_beams(beam_seq, parent), token.unsqueeze(-1)], 2)
        beam_lp = torch.cat([_pick_beams(beam_lp, parent), parent_dists.gather(2, token.unsqueeze(-1))], 2)
        if beam_full is not None:
            beam_full = torch.cat([_pick_beams(beam_full, parent), parent_dists.unsqueeze(2)], 2)

        ended = (token == EOS_IDX) | (t == length - 1)
        score = torch.where(ended, penalty(t + 1, beam_sum), float("-inf"))
        order = torch.cat([done_score, score], 1).sort(dim=1, descending=True, stable=True).indices[:, :sample_n]
        done_score = torch.cat([done_score, score], 1).gather(1, order)
        done_seq = _pick_beams(torch.cat([done_seq, _pad_to(beam_seq, length)], 1), order)
        done_lp = _pick_beams(torch.cat([done_lp, _pad_to(beam_lp, length)], 1), order)
        if beam_full is not None:
            done_full = _pick_beams(torch.cat([done_full, _pad_to(beam_full, length)], 1), order)
        beam_sum = beam_sum - FINISHED_PENALTY * ended.to(beam_sum.dtype)
        if t == length - 1:
            break
        rows = (parent + torch.arange(b, device=device).unsqueeze(1) * k).view(-1)
        prefix = prefix.select(rows).append(token.view(-1))
        logprobs, prefix = model.step(enc, prefix)
        logprobs = rescale(logprobs)

    seq = done_seq.view(b * sample_n, length)
    after = _zero_after_eos(seq)
    lps = done_lp.view(b * sample_n, length).masked_fill(after, 0.0)
    full = None
    if done_full is not None:
        full = done_full.view(b * sample_n, length, n_tok).masked_fill(after.unsqueeze(-1), 0.0)
    return DecodeOutput(seq.masked_fill(after, 0), lps, full, done_score.view(-1))
