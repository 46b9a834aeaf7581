"""Building blocks of the captioning transformer (pre-norm "Annotated Transformer" layout).

Module and attribute names follow the original checkpoints so that released state dicts load
with ``strict=True`` (e.g. ``sublayer.0.norm.a_2``, ``self_attn.linears.3.weight``).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KV = tuple[Tensor, Tensor]


class LayerNorm(nn.Module):
    """``a_2 * (x - mean) / (std + eps) + b_2`` with the *unbiased* std and eps added to the std.

    This differs from ``torch.nn.LayerNorm`` (biased variance, eps inside the square root); the
    released weights were trained with this variant.
    """

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class SublayerConnection(nn.Module):
    """Pre-norm residual: ``x + dropout(sublayer(norm(x)))``."""

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        return x + self.dropout(sublayer(self.norm(x)))


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float = 0.0) -> Tensor:
    """softmax(q k^T / sqrt(d_k), masked) v, dropout ``dropout_p`` on the probabilities.

    Without dropout: ``F.scaled_dot_product_attention`` (fused kernels). With dropout, the
    original's formula written out: torch's fallback for dropout scales the (larger) keys, not
    the queries, and re-checks every row for full masking (no row is fully masked here).
    """
    if dropout_p == 0.0:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return F.dropout(scores.softmax(-1), dropout_p) @ v


class MultiHeadedAttention(nn.Module):
    """Scaled dot-product attention over ``h`` heads; ``linears`` = (q, k, v, out) projections.

    Masks are boolean, True = may attend, broadcastable to (batch, queries, keys).
    Dropout is applied to the attention probabilities.
    """

    def __init__(self, h: int, d_model: int, dropout: float = 0.1):
        super().__init__()
        if d_model % h != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={h}")
        self.d_k = d_model // h
        self.h = h
        self.linears = nn.ModuleList([nn.Linear(d_model, d_model) for _ in range(4)])
        self.dropout_p = dropout

    def _split_heads(self, x: Tensor) -> Tensor:
        return x.view(x.size(0), -1, self.h, self.d_k).transpose(1, 2)

    def project_kv(self, key: Tensor, value: Tensor) -> KV:
        """Keys and values split into heads, each (batch, h, keys, d_k)."""
        return self._split_heads(self.linears[1](key)), self._split_heads(self.linears[2](value))

    def attend(self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, group: int = 1) -> Tensor:
        """Attend from ``query`` (batch, queries, d_model) to already projected ``k``/``v``.

        ``group`` > 1: ``k``/``v``/``mask`` hold batch / group rows and rows i*group .. i*group +
        group-1 of ``query`` all attend to row i, their queries joined in one attention, without
        copying ``k``/``v`` per row (the mask must not depend on the query: cross-attention).
        """
        q = self.linears[0](query)
        if group > 1:
            if query.size(0) != k.size(0) * group:
                raise ValueError(f"grouped attention needs {k.size(0) * group} query rows, got {tuple(query.shape)}")
            q = q.reshape(k.size(0), group * query.size(1), self.h, self.d_k).transpose(1, 2)
        else:
            q = self._split_heads(q)
        if mask is not None:
            mask = mask.unsqueeze(1)  # same mask for every head
        x = attention(q, k, v, mask, self.dropout_p if self.training else 0.0)
        x = x.transpose(1, 2).reshape(query.size(0), -1, self.h * self.d_k)
        return self.linears[3](x)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                group: int = 1) -> Tensor:
        return self.attend(query, *self.project_kv(key, value), mask, group)


class PositionwiseFeedForward(nn.Module):
    """``w_2(dropout(relu(w_1(x))))``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1):
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadedAttention(h, d_model, dropout)
        self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
        self.sublayer = nn.ModuleList([SublayerConnection(d_model, dropout) for _ in range(2)])

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, mask))
        return self.sublayer[1](x, self.feed_forward)


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, h: int, d_ff: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadedAttention(h, d_model, dropout)
        self.src_attn = MultiHeadedAttention(h, d_model, dropout)
        self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout)
        self.sublayer = nn.ModuleList([SublayerConnection(d_model, dropout) for _ in range(3)])

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor | None, tgt_mask: Tensor | None,
                group: int = 1) -> Tensor:
        """Full-sequence pass (teacher forcing and the uncached decoding reference); ``memory`` and
        ``src_mask`` may hold one row per ``group`` rows of ``x``."""
        x = self.sublayer[0](x, lambda y: self.self_attn(y, y, y, tgt_mask))
        x = self.sublayer[1](x, lambda y: self.src_attn(y, memory, memory, src_mask, group))
        return self.sublayer[2](x, self.feed_forward)

    def step(self, x: Tensor, cross_kv: KV, src_mask: Tensor | None, past_kv: KV | None,
             group: int = 1) -> tuple[Tensor, KV]:
        """One new position ``x`` (batch, 1, d_model) given cached keys/values; returns (out, new cache).
        ``cross_kv`` / ``src_mask`` may hold one row per ``group`` rows of ``x`` (see ``attend``)."""
        y = self.sublayer[0].norm(x)
        k, v = self.self_attn.project_kv(y, y)
        if past_kv is not None:
            k, v = torch.cat([past_kv[0], k], 2), torch.cat([past_kv[1], v], 2)
        x = x + self.sublayer[0].dropout(self.self_attn.attend(y, k, v, None))
        x = self.sublayer[1](x, lambda y: self.src_attn.attend(y, *cross_kv, src_mask, group))
        return self.sublayer[2](x, self.feed_forward), (k, v)


class Encoder(nn.Module):
    def __init__(self, n_layers: int, d_model: int, h: int, d_ff: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(d_model, h, d_ff, dropout) for _ in range(n_layers)])
        self.norm = LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class Decoder(nn.Module):
    def __init__(self, n_layers: int, d_model: int, h: int, d_ff: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(d_model, h, d_ff, dropout) for _ in range(n_layers)])
        self.norm = LayerNorm(d_model)

    def forward(self, x: Tensor, memory: Tensor, src_mask: Tensor | None, tgt_mask: Tensor | None,
                group: int = 1) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory, src_mask, tgt_mask, group)
        return self.norm(x)


class Embeddings(nn.Module):
    """Word embedding scaled by sqrt(d_model)."""

    def __init__(self, d_model: int, n_tokens: int):
        super().__init__()
        self.lut = nn.Embedding(n_tokens, d_model)
        self.scale = math.sqrt(d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.lut(x) * self.scale


def sinusoid_table(max_len: int, d_model: int) -> Tensor:
    """(max_len, d_model): sin on even dims, cos on odd dims, wavelengths 10000^(2i/d)."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class PositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table (buffer ``pe``, (1, max_len, d), saved in the state dict)."""

    def __init__(self, d_model: int, dropout: float, max_len: int = 5000):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoid_table(max_len, d_model).unsqueeze(0))

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """``x`` (batch, T, d) holds positions ``start .. start+T-1``."""
        if start + x.size(1) > self.pe.size(1):
            raise ValueError(f"sequence reaches position {start + x.size(1)}, table has {self.pe.size(1)}")
        return self.dropout(x + self.pe[:, start:start + x.size(1)])
