"""Pre-LayerNorm transformer used by CLIP's text tower and its ViT image tower.

Tensors are batch-first (N, L, C) internally; the parameter names follow OpenAI's layout
(`attn.in_proj_weight`, `attn.out_proj`, `mlp.c_fc`, ...), so OpenAI weights load unchanged.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LayerNorm, QuickGELU, merge_heads, resize_pos_embed, split_heads


class SelfAttention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names and init."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        return self.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=causal)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, width * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(width * 4, width)),
        ]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower. `forward` gives the projected CLS embedding, `forward_tokens` all tokens."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def _encode(self, x: Tensor) -> Tensor:
        x = self.conv1(x.to(self.conv1.weight.dtype))             # (N, C, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)                           # (N, hw, C)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + resize_pos_embed(self.positional_embedding, (h, w)).to(x.dtype)
        return self.transformer(self.ln_pre(x))

    def forward_tokens(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> (N, 1 + (H/p)*(W/p), width): CLS then patch tokens, after ln_post, unprojected."""
        return self.ln_post(self._encode(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.ln_post(self._encode(x)[:, 0]) @ self.proj
