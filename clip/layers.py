"""Small building blocks shared by the CLIP towers."""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm that computes half-precision inputs in float32 and casts back (safe in an fp16 model)."""

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        y = F.layer_norm(x.to(dtype), self.normalized_shape, self.weight.to(dtype), self.bias.to(dtype), self.eps)
        return y.to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI's CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


def resize_pos_embed(pos: Tensor, grid: tuple[int, int]) -> Tensor:
    """Resize a (1 + s*s, C) positional embedding (leading class/mean token) to a (h, w) grid.

    The spatial part is interpolated bicubically (align_corners=False) in float32; the leading
    token is kept. Returns `pos` itself when the grid already matches.
    """
    n, c = pos.shape[0] - 1, pos.shape[1]
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"positional embedding has {n} spatial entries, not a square grid")
    if (side, side) == tuple(grid):
        return pos
    spatial = pos[1:].float().reshape(1, side, side, c).permute(0, 3, 1, 2)
    spatial = F.interpolate(spatial, size=tuple(grid), mode="bicubic", align_corners=False)
    spatial = spatial.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], c).to(pos.dtype)
    return torch.cat([pos[:1], spatial])


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(N, L, C) -> (N, heads, L, C // heads)."""
    n, length, c = x.shape
    return x.view(n, length, heads, c // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(N, heads, L, D) -> (N, L, heads * D)."""
    n, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * d)
