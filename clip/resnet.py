"""CLIP's ModifiedResNet image tower (OpenAI parameter layout).

Differences from a torchvision ResNet: a three-convolution stem with an average pool, anti-aliased
strides (an average pool before the strided path instead of a strided convolution), and an
attention pool instead of global average pooling.

Convolution weights are kept in channels_last memory format (faster convolutions on CPU and CUDA;
values and state-dict keys are unaffected).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import merge_heads, resize_pos_embed, split_heads


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, out, 1, bias=False)),
                ("1", nn.BatchNorm2d(out)),
            ]))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)


class AttentionPool2d(nn.Module):
    """One multi-head attention step whose query is the mean of the grid.

    The positional embedding is stored for a `spacial_dim` x `spacial_dim` grid and is
    interpolated (see `resize_pos_embed`) when the input grid differs.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)                            # (N, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)      # (N, 1 + HW, C)
        x = x + resize_pos_embed(self.positional_embedding, (h, w)).to(x.dtype)
        q = split_heads(self.q_proj(x[:, :1]), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        out = merge_heads(F.scaled_dot_product_attention(q, k, v))  # (N, 1, C)
        return self.c_proj(out[:, 0])


class ModifiedResNet(nn.Module):
    """ResNet image tower. `forward` gives the pooled embedding, `forward_grid` the layer4 grid."""

    def __init__(self, layers: tuple[int, int, int, int], output_dim: int, heads: int,
                 input_resolution: int = 224, width: int = 64):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.grid_dim = width * 8 * Bottleneck.expansion
        self.attnpool = AttentionPool2d(input_resolution // 32, self.grid_dim, heads, output_dim)
        self.to(memory_format=torch.channels_last)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_grid(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) images -> (N, width*32, H/32, W/32) layer4 features (before pooling)."""
        x = x.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.attnpool(self.forward_grid(x))
