"""The CLIP model (OpenAI parameter layout), architecture inference from a state dict, and a tiny config.

Head counts are not stored in a state dict, so they follow one rule (`default_heads`):
heads = max(1, width // 64), lowered until it divides width. This equals OpenAI's width // 64 for
every official model (all widths are multiples of 64) and stays valid for narrow towers. Text heads
use the text width; ResNet attention-pool heads use the pooled width (vision_width * 32, i.e.
OpenAI's vision_width * 32 // 64); ViT heads use the ViT width. A model built with other head
counts cannot be rebuilt from its state dict by `build_model`.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import LayerNorm
from .resnet import AttentionPool2d, Bottleneck, ModifiedResNet
from .transformer import ResidualAttentionBlock, Transformer, VisionTransformer

__all__ = ["CLIP", "ModifiedResNet", "AttentionPool2d", "Bottleneck", "VisionTransformer", "Transformer",
           "ResidualAttentionBlock", "build_model", "infer_config", "default_heads", "tiny_clip_config",
           "convert_to_fp16"]


def default_heads(width: int) -> int:
    """Number of attention heads for a tower of this width (see the module docstring)."""
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


def patch_grid(tokens: Tensor, image_size: tuple[int, int] | torch.Size, patch: int) -> Tensor:
    """ViT tokens (N, 1 + h*w, C) of an image of ``image_size`` -> patch grid (N, C, h, w) (class token dropped)."""
    h, w = image_size[0] // patch, image_size[1] // patch
    return tokens[:, 1:].reshape(tokens.shape[0], h, w, tokens.shape[-1]).permute(0, 3, 1, 2)


class CLIP(nn.Module):
    """Image and text towers with a shared embedding space; constructor arguments as OpenAI's.

    `vision_layers` is a 4-tuple of ResNet stage depths (ModifiedResNet, `vision_patch_size` None)
    or an int layer count (VisionTransformer).
    """

    def __init__(self, embed_dim: int, image_resolution: int, vision_layers: tuple[int, int, int, int] | int,
                 vision_width: int, vision_patch_size: int | None, context_length: int, vocab_size: int,
                 transformer_width: int, transformer_heads: int, transformer_layers: int):
        super().__init__()
        self.config = dict(embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers,
                           vision_width=vision_width, vision_patch_size=vision_patch_size,
                           context_length=context_length, vocab_size=vocab_size,
                           transformer_width=transformer_width, transformer_heads=transformer_heads,
                           transformer_layers=transformer_layers)
        self.context_length = context_length
        self.vocab_size = vocab_size
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(tuple(vision_layers), embed_dim, default_heads(vision_width * 32),
                                         image_resolution, vision_width)
        else:
            if vision_patch_size is None:
                raise ValueError("a ViT image tower (int vision_layers) needs vision_patch_size")
            self.visual = VisionTransformer(image_resolution, vision_patch_size, vision_width, vision_layers,
                                            default_heads(vision_width), embed_dim)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        """OpenAI's initialisation (zero-init of each bottleneck's last BatchNorm included)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.visual, ModifiedResNet):
            pool = self.visual.attnpool
            std = pool.c_proj.in_features ** -0.5
            for lin in (pool.q_proj, pool.k_proj, pool.v_proj, pool.c_proj):
                nn.init.normal_(lin.weight, std=std)
            for stage in (self.visual.layer1, self.visual.layer2, self.visual.layer3, self.visual.layer4):
                for name, param in stage.named_parameters():
                    if name.endswith("bn3.weight"):
                        nn.init.zeros_(param)
        width, layers = self.transformer.width, self.transformer.layers
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, image: Tensor) -> Tensor:
        """(N, 3, H, W) normalised images -> (N, embed_dim) unnormalised embeddings."""
        return self.visual(image)

    def visual_grid(self, image: Tensor) -> Tensor:
        """Spatial features (N, C, h, w), channels first, for every CLIP family; `encode_image` is untouched.

        ResNet: the layer4 grid, C = vision_width*32, (h, w) = (H/32, W/32), before attention pooling.
        ViT: the patch tokens after ln_post (class token dropped), unprojected, C = vision_width,
        (h, w) = (H/p, W/p). The class token is ``visual.forward_tokens(image)[:, 0]``.
        """
        if isinstance(self.visual, ModifiedResNet):
            return self.visual.forward_grid(image)
        return patch_grid(self.visual.forward_tokens(image), image.shape[-2:], self.visual.conv1.kernel_size[0])

    def encode_text_pooled(self, text: Tensor) -> Tensor:
        """(N, L) token ids -> (N, transformer_width): the final-LayerNorm state at EOT, before
        ``text_projection`` (Hugging Face's ``pooler_output``; the grammar head's input).

        Runs the transformer only up to the longest sequence in the batch; with a causal mask the
        result equals the full-context computation.
        """
        if text.shape[1] > self.context_length:
            raise ValueError(f"text has {text.shape[1]} tokens, more than the context length {self.context_length}")
        eot = text.argmax(dim=-1)
        n = int(eot.max()) + 1
        x = self.token_embedding(text[:, :n]).to(self.dtype) + self.positional_embedding[:n].to(self.dtype)
        x = self.ln_final(self.transformer(x, causal=True))
        return x[torch.arange(x.shape[0], device=x.device), eot]

    def encode_text(self, text: Tensor) -> Tensor:
        """(N, L) token ids, L <= context_length, EOT = the largest id -> (N, embed_dim)."""
        return self.encode_text_pooled(text) @ self.text_projection

    def forward(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (logits_per_image, logits_per_text): scaled cosine similarities."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def convert_to_fp16(model: nn.Module) -> nn.Module:
    """Cast conv, linear, attention and projection weights to fp16 in place, as OpenAI's release does.

    Normalisation layers, embeddings and logit_scale stay fp32. Meant for CUDA inference only.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.half()
        for name in ("in_proj_weight", "in_proj_bias", "text_projection", "proj"):
            param = getattr(module, name, None)
            if isinstance(param, nn.Parameter):
                param.data = param.data.half()
    return model


def _count_blocks(state_dict: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def infer_config(state_dict: dict[str, Tensor]) -> dict:
    """CLIP constructor arguments implied by an OpenAI-layout state dict (heads by `default_heads`)."""
    for key in ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight",
                "visual.conv1.weight"):
        if key not in state_dict:
            raise KeyError(f"not a CLIP state dict in OpenAI layout: missing {key!r}")
    sd = state_dict
    if "visual.proj" in sd:
        vision_width, _, vision_patch_size, _ = sd["visual.conv1.weight"].shape
        vision_layers = _count_blocks(sd, "visual.transformer.resblocks.")
        n_pos = sd["visual.positional_embedding"].shape[0]
        grid_to_resolution = vision_patch_size
    else:
        vision_layers = tuple(_count_blocks(sd, f"visual.layer{i}.") for i in (1, 2, 3, 4))
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        vision_patch_size = None
        n_pos = sd["visual.attnpool.positional_embedding"].shape[0]
        grid_to_resolution = 32
    grid = math.isqrt(n_pos - 1)
    if grid * grid + 1 != n_pos:
        raise ValueError(f"image positional embedding has {n_pos} rows, not 1 + a square grid")
    transformer_width = sd["ln_final.weight"].shape[0]
    return dict(
        embed_dim=sd["text_projection"].shape[1],
        image_resolution=grid * grid_to_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=vision_patch_size,
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=default_heads(transformer_width),
        transformer_layers=_count_blocks(sd, "transformer.resblocks."),
    )


def build_model(state_dict: dict[str, Tensor]) -> CLIP:
    """Build the architecture `infer_config` finds, load the weights strictly, return an fp32 eval model.

    The dict is not modified. The TorchScript-only entries `input_resolution`, `context_length` and
    `vocab_size` of OpenAI's archives are ignored.
    """
    sd = {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    model = CLIP(**infer_config(sd))
    model.load_state_dict(sd, strict=True)
    return model.float().eval()


def tiny_clip_config(vision: str = "resnet") -> dict:
    """Constructor arguments of a tiny CLIP (64 px) for tests and the FineShapes world.

    vision="resnet": ModifiedResNet with stages (1, 1, 1, 1) and width 16 (grid features of
    512 channels, 2x2 at 64 px); vision="vit": a 2-layer ViT of width 64 with 16 px patches.
    The text tower has the full BPE vocabulary, width 128, 3 layers and a context of 32 tokens.
    """
    text = dict(embed_dim=128, image_resolution=64, context_length=32, vocab_size=49408,
                transformer_width=128, transformer_heads=default_heads(128), transformer_layers=3)
    if vision == "resnet":
        return dict(text, vision_layers=(1, 1, 1, 1), vision_width=16, vision_patch_size=None)
    if vision == "vit":
        return dict(text, vision_layers=2, vision_width=64, vision_patch_size=16)
    raise ValueError(f"vision must be 'resnet' or 'vit', got {vision!r}")
