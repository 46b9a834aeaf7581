"""The transformer captioner of the original code base (``caption_model: transformer``).

Visual tokens -> ``att_embed`` (Linear + ReLU + Dropout, no positional encoding) -> pre-norm
encoder; words -> embedding * sqrt(d) + sinusoidal encoding -> pre-norm decoder -> ``V + 1``
log-probabilities. Index 0 is BOS, EOS and PAD at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captioning.models.layers import KV, Decoder, Embeddings, Encoder, PositionalEncoding

PAD_IDX = BOS_IDX = EOS_IDX = 0


class Generator(nn.Module):
    """Output projection to ``V + 1`` classes (log-softmax is applied by the caller)."""

    def __init__(self, d_model: int, n_tokens: int):
        super().__init__()
        self.proj = nn.Linear(d_model, n_tokens)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class EncoderDecoder(nn.Module):
    """Container whose attribute names match the original ``model.*`` parameters."""

    def __init__(self, n_tokens: int, d_model: int, d_ff: int, n_enc: int, n_dec: int, h: int, dropout: float):
        super().__init__()
        self.encoder = Encoder(n_enc, d_model, h, d_ff, dropout)
        self.decoder = Decoder(n_dec, d_model, h, d_ff, dropout)
        self.tgt_embed = nn.Sequential(Embeddings(d_model, n_tokens), PositionalEncoding(d_model, dropout))
        self.generator = Generator(d_model, n_tokens)

    def embed_words(self, tokens: Tensor, start: int = 0) -> Tensor:
        return self.tgt_embed[1](self.tgt_embed[0](tokens), start)


@dataclass
class Encoded:
    """Encoder output for decoding; ``cross_kv`` holds each decoder layer's projected memory.

    Decoding rows i*group .. i*group + group-1 use row i of ``memory`` / ``mask`` / ``cross_kv``
    (``group`` > 1 only with ``cross_kv``: the cached cross-attention then reads each image's
    keys/values once for all its rows instead of a copy per row).
    """

    memory: Tensor  # (R / group, N, d)
    mask: Tensor | None  # (R / group, 1, N) bool, None = no padding
    cross_kv: list[KV] | None = None
    group: int = 1

    @property
    def rows(self) -> int:
        """R, the number of decoding rows."""
        return self.memory.size(0) * self.group

    def repeat_interleave(self, n: int) -> "Encoded":
        """Each row repeated ``n`` times, copies adjacent (row i*n + k); with ``cross_kv`` the
        copies are only counted (``group``), not made."""
        if n == 1:
            return self
        if self.cross_kv is not None:
            return Encoded(self.memory, self.mask, self.cross_kv, self.group * n)
        mask = None if self.mask is None else self.mask.repeat_interleave(n, 0)
        return Encoded(self.memory.repeat_interleave(n, 0), mask)


@dataclass
class Prefix:
    """Tokens decoded so far (BOS first) and, when caching, each decoder layer's self-attention k/v."""

    tokens: Tensor  # (R, t)
    self_kv: list[KV] | None = None

    def select(self, index: Tensor) -> "Prefix":
        """Rows ``index`` (used to reorder beams)."""
        kv = None if self.self_kv is None else [(k[index], v[index]) for k, v in self.self_kv]
        return Prefix(self.tokens[index], kv)

    def append(self, token: Tensor) -> "Prefix":
        """The prefix extended by ``token`` (R,); the cache is kept (it covers the old tokens)."""
        return Prefix(torch.cat([self.tokens, token.unsqueeze(1)], 1), self.self_kv)


def causal_mask(size: int, device: torch.device) -> Tensor:
    """(1, size, size) bool lower-triangular mask."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril().unsqueeze(0)


def target_mask(seq: Tensor) -> Tensor:
    """Teacher-forcing mask (R, T, T): non-pad keys (position 0 always kept) AND causal."""
    keep = seq != PAD_IDX
    keep[:, 0] = True
    return keep.unsqueeze(-2) & causal_mask(seq.size(-1), seq.device)


class TransformerCaptioner(nn.Module):
    """Transformer captioner with the original parameter names (``att_embed.*``, ``model.*``).

    Args:
        vocab_size: V, the number of words (UNK included); the output layer has V + 1 classes.
        att_feat_size: visual token width C (2048 for CLIP-RN50 grids).
        d_model, d_ff, n_enc, n_dec, num_heads, dropout: transformer sizes.
        drop_prob_lm: dropout after ``att_embed`` (0.5 in the original; not the transformer dropout).
        max_length: the longest caption decoding produces (20 in the original).
    """

    def __init__(
        self,
        vocab_size: int,
        att_feat_size: int = 2048,
        d_model: int = 512,
        d_ff: int = 2048,
        n_enc: int = 6,
        n_dec: int = 6,
        num_heads: int = 8,
        dropout: float = 0.1,
        drop_prob_lm: float = 0.5,
        max_length: int = 20,
    ):
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.att_embed = nn.Sequential(nn.Linear(att_feat_size, d_model), nn.ReLU(), nn.Dropout(drop_prob_lm))
        self.model = EncoderDecoder(vocab_size + 1, d_model, d_ff, n_enc, n_dec, num_heads, dropout)
        if max_length >= self.model.tgt_embed[1].pe.size(1):
            raise ValueError(f"max_length={max_length} exceeds the positional table")
        for p in self.model.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # ----- encoder -----

    def _visual_tokens(self, att_feats: Tensor, att_masks: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """att_embed on the (trimmed) visual tokens; padded tokens are zeroed as in the original."""
        if att_feats.dim() != 3:
            raise ValueError(f"att_feats must be (B, N, C), got shape {tuple(att_feats.shape)}")
        if att_masks is None:
            return self.att_embed(att_feats), None
        if att_masks.shape != att_feats.shape[:2]:
            raise ValueError(f"att_masks shape {tuple(att_masks.shape)} != (B, N) of att_feats "
                             f"{tuple(att_feats.shape[:2])}")
        lengths = att_masks.long().sum(1)
        keep = torch.arange(att_feats.size(1), device=att_feats.device) < lengths.unsqueeze(1)
        if (lengths < 1).any() or not torch.equal(keep, att_masks.bool()):
            raise ValueError("att_masks must mark a non-empty prefix of each row (valid tokens first, padding last)")
        n = int(lengths.max())
        keep = keep[:, :n]
        x = self.att_embed(att_feats[:, :n]) * keep.unsqueeze(-1).to(att_feats.dtype)
        return x, keep.unsqueeze(1)

    def encode(self, att_feats: Tensor, att_masks: Tensor | None = None) -> Encoded:
        """Encode each image once: memory (B, N, d) and source mask (B, 1, N) or None."""
        x, mask = self._visual_tokens(att_feats, att_masks)
        return Encoded(self.model.encoder(x, mask), mask)

    # ----- teacher forcing -----

    def forward(
        self, att_feats: Tensor, att_masks: Tensor | None, seq: Tensor, encode_once: bool = False
    ) -> Tensor:
        """Teacher-forced log-probabilities (B*S, T, V+1), float32 also under autocast.

        ``seq`` is (B*S, T) or (B, S, T) with column 0 = BOS; rows i*S + j belong to image i.
        By default the embedded visual tokens are repeated S times *before* the encoder, as the
        original does (S independent encoder passes and dropout masks). ``encode_once=True``
        encodes each image once and its S captions attend to that one memory (cross-attention
        keys/values projected once per image): same values in eval mode, far fewer FLOPs, but
        one shared encoder dropout draw per image in train mode.
        """
        if seq.dim() == 3:
            seq = seq.reshape(-1, seq.size(-1))
        b = att_feats.size(0)
        if seq.dim() != 2 or seq.size(0) % b != 0:
            raise ValueError(f"seq rows ({tuple(seq.shape)}) must be a multiple of the batch size {b}")
        s = seq.size(0) // b
        group = s if encode_once else 1
        if encode_once:
            enc = self.encode(att_feats, att_masks)
            memory, mask = enc.memory, enc.mask
        else:
            x, mask = self._visual_tokens(att_feats, att_masks)
            if s > 1:
                x = x.repeat_interleave(s, dim=0)
                mask = None if mask is None else mask.repeat_interleave(s, dim=0)
            memory = self.model.encoder(x, mask)
        out = self.model.decoder(self.model.embed_words(seq), memory, mask, target_mask(seq), group)
        return F.log_softmax(self.model.generator(out).float(), dim=-1)

    # ----- incremental decoding -----

    def prepare_decoding(self, enc: Encoded, use_cache: bool = True) -> Encoded:
        """Attach each decoder layer's cross-attention keys/values (computed once) when caching."""
        if not use_cache:
            return Encoded(enc.memory, enc.mask).repeat_interleave(enc.group)
        kv = [layer.src_attn.project_kv(enc.memory, enc.memory) for layer in self.model.decoder.layers]
        return Encoded(enc.memory, enc.mask, kv, enc.group)

    def start(self, enc: Encoded, use_cache: bool = True) -> Prefix:
        """The BOS-only prefix for every row of ``enc``."""
        bos = torch.full((enc.rows, 1), BOS_IDX, dtype=torch.long, device=enc.memory.device)
        return Prefix(bos, [] if use_cache else None)

    def step(self, enc: Encoded, prefix: Prefix) -> tuple[Tensor, Prefix]:
        """Log-probabilities (R, V+1) of the token after ``prefix``, and the prefix with its cache
        extended. Caching needs ``enc`` from ``prepare_decoding(use_cache=True)``.

        Uncached (the faithful reference): the whole prefix is re-decoded under the causal mask
        alone, recomputing the memory projections. Cached: only the newest token is decoded.
        """
        tokens = prefix.tokens
        if prefix.self_kv is None:
            x = self.model.embed_words(tokens)
            x = self.model.decoder(x, enc.memory, enc.mask, causal_mask(tokens.size(1), tokens.device))
            return F.log_softmax(self.model.generator(x[:, -1]).float(), dim=-1), prefix
        if enc.cross_kv is None:
            raise ValueError("cached decoding needs enc from prepare_decoding(enc, use_cache=True)")
        pos = tokens.size(1) - 1
        if prefix.self_kv and prefix.self_kv[0][0].size(2) != pos:
            raise ValueError("the prefix cache is out of step with its tokens")
        x = self.model.embed_words(tokens[:, -1:], start=pos)
        new_kv = []
        for i, layer in enumerate(self.model.decoder.layers):
            x, kv = layer.step(x, enc.cross_kv[i], enc.mask, prefix.self_kv[i] if prefix.self_kv else None,
                               enc.group)
            new_kv.append(kv)
        x = self.model.decoder.norm(x)[:, 0]
        return F.log_softmax(self.model.generator(x).float(), dim=-1), Prefix(tokens, new_kv)
