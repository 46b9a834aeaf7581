"""The original code base's captioner hot paths, re-implemented for side-by-side benchmarks.

Written after the original's ``TransformerModel`` ("Annotated Transformer" layers), its
``AttModel._sample`` loop and its SCST step (``get_self_critical_reward`` + ``RewardCriterion``),
docs/ORIGINAL.md §3–§4: attention as matmul / masked_fill / softmax / dropout on the probabilities,
the embedded visual tokens repeated per caption *before* the encoder, decoding that re-decodes
the whole prefix at every step and keeps the full (R, L, V+1) log-distributions, and CIDEr-D
scored entry by entry in pure Python. The parameter names are the original's (and ours), so
:func:`from_ours` shares one set of weights between both models.
"""
from __future__ import annotations

import copy
import math
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from pycocoevalcap.cider.cider_scorer import CiderScorer
from torch import Tensor, nn

from captioning.models import TransformerCaptioner


def attention(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, dropout: nn.Module) -> Tensor:
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(query.size(-1))
    if mask is not None:
        scores = scores.masked_fill(mask == 0, float("-inf"))
    return torch.matmul(dropout(F.softmax(scores, dim=-1)), value)


class MultiHeadedAttention(nn.Module):
    def __init__(self, h: int, d_model: int, dropout: float):
        super().__init__()
        self.d_k, self.h = d_model // h, h
        self.linears = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            mask = mask.unsqueeze(1)
        n = query.size(0)
        q, k, v = [lin(x).view(n, -1, self.h, self.d_k).transpose(1, 2)
                   for lin, x in zip(self.linears, (query, key, value))]
        x = attention(q, k, v, mask, self.dropout)
        return self.linears[-1](x.transpose(1, 2).contiguous().view(n, -1, self.h * self.d_k))


def subsequent_mask(size: int) -> Tensor:
    return torch.from_numpy(np.triu(np.ones((1, size, size)), k=1).astype("uint8")) == 0


def _original_attentions(module: nn.Module) -> None:
    """Swap every attention of a deep copy of our model for the original's (same parameters)."""
    for name, child in module.named_children():
        if type(child).__name__ == "MultiHeadedAttention":
            new = MultiHeadedAttention(child.h, child.h * child.d_k, child.dropout_p)
            new.linears = child.linears
            setattr(module, name, new)
        else:
            _original_attentions(child)


class OriginalCaptioner(nn.Module):
    """The original's forward and sample modes on a copy of our modules with the original's attention."""

    def __init__(self, ours: TransformerCaptioner):
        super().__init__()
        ours = copy.deepcopy(ours)
        _original_attentions(ours)
        self.att_embed, self.model = ours.att_embed, ours.model
        self.vocab_size, self.seq_length = ours.vocab_size, ours.max_length

    def _decode(self, memory: Tensor, src_mask: Tensor, ys: Tensor, tgt_mask: Tensor) -> Tensor:
        x = self.model.tgt_embed(ys)
        for layer in self.model.decoder.layers:
            x = layer.sublayer[0](x, lambda y: layer.self_attn(y, y, y, tgt_mask))
            x = layer.sublayer[1](x, lambda y: layer.src_attn(y, memory, memory, src_mask))
            x = layer.sublayer[2](x, layer.feed_forward)
        return self.model.decoder.norm(x)

    def _encode(self, att_feats: Tensor) -> tuple[Tensor, Tensor]:
        x = self.att_embed(att_feats)
        mask = att_feats.new_ones(att_feats.shape[:2], dtype=torch.long).unsqueeze(-2)
        for layer in self.model.encoder.layers:
            x = layer.sublayer[0](x, lambda y: layer.self_attn(y, y, y, mask))
            x = layer.sublayer[1](x, layer.feed_forward)
        return self.model.encoder.norm(x), mask

    def forward(self, att_feats: Tensor, seq: Tensor) -> Tensor:
        """Teacher forcing (``mode='forward'``): visual tokens repeated per caption before the encoder."""
        x = self.att_embed(att_feats)
        mask = att_feats.new_ones(att_feats.shape[:2], dtype=torch.long).unsqueeze(-2)
        seq_mask = (seq != 0)
        seq_mask[:, 0] = True
        seq_mask = seq_mask.unsqueeze(-2) & subsequent_mask(seq.size(-1)).to(seq_mask)
        s = seq.size(0) // att_feats.size(0)
        x, mask = x.repeat_interleave(s, 0), mask.repeat_interleave(s, 0)
        for layer in self.model.encoder.layers:
            x = layer.sublayer[0](x, lambda y: layer.self_attn(y, y, y, mask))
            x = layer.sublayer[1](x, layer.feed_forward)
        memory = self.model.encoder.norm(x)
        return F.log_softmax(self.model.generator.proj(self._decode(memory, mask, seq, seq_mask)), dim=-1)

    def sample(self, att_feats: Tensor, method: str = "greedy", sample_n: int = 1) -> tuple[Tensor, Tensor]:
        """``AttModel._sample``: (seq (R, L), seqLogprobs (R, L, V+1))."""
        memory, mask = self._encode(att_feats)
        memory, mask = memory.repeat_interleave(sample_n, 0), mask.repeat_interleave(sample_n, 0)
        rows = memory.size(0)
        seq = memory.new_full((rows, self.seq_length), 0, dtype=torch.long)
        seq_logprobs = memory.new_zeros(rows, self.seq_length, self.vocab_size + 1)
        ys = memory.new_zeros((rows, 0), dtype=torch.long)
        it = memory.new_full([rows], 0, dtype=torch.long)
        unfinished = None
        for t in range(self.seq_length + 1):
            ys = torch.cat([ys, it.unsqueeze(1)], 1)
            out = self._decode(memory, mask, ys, subsequent_mask(ys.size(1)).to(memory.device))
            logprobs = F.log_softmax(self.model.generator.proj(out[:, -1]), dim=1)
            if t == self.seq_length:
                break
            if method == "greedy":
                _, it = torch.max(logprobs.data, 1)
            else:
                it = torch.distributions.Categorical(logits=logprobs.data).sample()
            it = it.view(-1).long()
            if t == 0:
                unfinished = it != 0
            else:
                it[~unfinished] = 0
                logprobs = logprobs * unfinished.unsqueeze(1).to(logprobs)
                unfinished = unfinished & (it != 0)
            seq[:, t] = it
            seq_logprobs[:, t] = logprobs
            if unfinished.sum() == 0:
                break
        return seq, seq_logprobs


class FixedDfCider(CiderScorer):
    """pycocoevalcap's CIDEr scorer with the df table and ref_len of a df file (pyciderevalcap's df mode)."""

    ref_len = property(lambda self: self._log_ref_len, lambda self, value: None)

    def __init__(self, df: dict, n_images: int):
        super().__init__()
        self._log_ref_len = np.log(float(n_images))
        self.document_frequency = defaultdict(float, df)


def array_to_str(arr: np.ndarray) -> str:
    out = ""
    for token in arr:
        out += str(token) + " "
        if token == 0:
            break
    return out.strip()


def self_critical_reward(greedy: Tensor, gts: list[np.ndarray], samples: Tensor, df: dict,
                         n_images: int) -> np.ndarray:
    """``get_self_critical_reward``: CIDEr-D of samples minus their image's greedy caption, (R, L)."""
    b, r = greedy.size(0), samples.size(0)
    k = r // b
    res = [array_to_str(row) for row in samples.cpu().numpy()] + [array_to_str(row) for row in greedy.cpu().numpy()]
    refs = [[array_to_str(g) for g in image] for image in gts]
    scorer = FixedDfCider(df, n_images)
    for i, text in enumerate(res):
        scorer += (text, refs[i // k if i < r else i - r])
    scores = np.array(scorer.compute_cider())
    advantage = scores[:r].reshape(b, k) - scores[r:][:, None]
    return np.repeat(advantage.reshape(-1)[:, None], samples.size(1), 1)


def reward_criterion(seq_logprobs: Tensor, seq: Tensor, reward: Tensor) -> Tensor:
    """``RewardCriterion`` on the full log-distributions."""
    lp = seq_logprobs.gather(2, seq.unsqueeze(2)).squeeze(2).reshape(-1)
    mask = (seq > 0).to(lp)
    mask = torch.cat([mask.new_ones(mask.size(0), 1), mask[:, :-1]], 1).reshape(-1)
    return torch.sum(-lp * reward.reshape(-1) * mask) / torch.sum(mask)


def scst_step(model: OriginalCaptioner, att_feats: Tensor, gts: list[np.ndarray], df: dict, n_images: int,
              sample_n: int = 5) -> Tensor:
    """The original's SCST training step (greedy baseline), backward included; returns the loss."""
    model.eval()
    with torch.no_grad():
        greedy, _ = model.sample(att_feats, "greedy")
    model.train()
    seq, seq_logprobs = model.sample(att_feats, "sample", sample_n)
    reward = torch.from_numpy(self_critical_reward(greedy, gts, seq, df, n_images)).to(seq_logprobs)
    loss = reward_criterion(seq_logprobs, seq, reward)
    loss.backward()
    return loss.detach()
