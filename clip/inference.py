"""Batched, gradient-free feature extraction with a CLIP model (results are float32, on the model's device)."""
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .model import CLIP
from .tokenizer import tokenize


def _device(model: CLIP) -> torch.device:
    return model.positional_embedding.device


@torch.inference_mode()
def image_embeddings(model: CLIP, images: Tensor | Iterable[Tensor], batch_size: int = 64,
                     normalize: bool = True) -> Tensor:
    """(N, 3, H, W) preprocessed images -> (N, embed_dim) embeddings, L2-normalised by default.

    ``images`` is one tensor, encoded ``batch_size`` images at a time, or an iterable of such
    batches, encoded as they come (e.g. read from files or converted from uint8 one batch at a
    time; ``batch_size`` is then unused). Every gradient-free image embedding of the project (CLIP-S
    features, retrieval evaluation, the app) comes from here. The result is an inference tensor: no
    autograd through it, and no in-place changes outside inference mode.
    """
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    out = [model.encode_image(chunk.to(_device(model))).float() for chunk in batches]
    feats = torch.cat(out)
    return F.normalize(feats, dim=-1) if normalize else feats


@torch.inference_mode()
def text_embeddings(model: CLIP, texts: Sequence[str], batch_size: int = 256, normalize: bool = True,
                    truncate: bool = False) -> Tensor:
    """Strings -> (N, embed_dim) embeddings, L2-normalised by default (tokenised at the model's context)."""
    tokens = tokenize(list(texts), context_length=model.context_length, truncate=truncate)
    out = [model.encode_text(chunk.to(_device(model))).float() for chunk in tokens.split(batch_size)]
    feats = torch.cat(out)
    return F.normalize(feats, dim=-1) if normalize else feats


@torch.inference_mode()
def grid_features(model: CLIP, images: Tensor, batch_size: int = 16) -> Tensor:
    """(N, 3, H, W) preprocessed images -> (N, H/32, W/32, C) ResNet layer4 features (row-major grid,
    channels last, as the original stores them), unnormalised."""
    out = [model.visual_grid(chunk.to(_device(model))).permute(0, 2, 3, 1).float()
           for chunk in images.split(batch_size)]
    return torch.cat(out)
