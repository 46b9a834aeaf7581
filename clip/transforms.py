"""CLIP image preprocessing with PIL and torch only.

Each transform is a picklable callable PIL.Image -> (3, H, W) float32 tensor, so it works in
DataLoader workers. Images are converted to RGB first (OpenAI converts after resizing, which makes
PIL resize palette images with nearest-neighbour; both original feature scripts convert first).
Resizing is PIL bicubic, as torchvision does for PIL images.
"""
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .images import to_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the shorter side is `size`; the longer side is truncated like torchvision's."""
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return image.resize(new, Image.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Central size x size crop, with torchvision's rounding of the offsets."""
    w, h = image.size
    if w < size or h < size:
        raise ValueError(f"image of size {w}x{h} is smaller than the {size} px crop")
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def to_normalized_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [0, 1] (like ToTensor), then CLIP mean/std normalisation."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class ClipPreprocess:
    """Shorter side to n_px (bicubic), centre crop n_px, normalise."""
    n_px: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        return to_normalized_tensor(center_crop(resize_shorter_side(image, self.n_px), self.n_px))


@dataclass(frozen=True)
class SquarePreprocess:
    """Resize to exactly n_px x n_px (bicubic, aspect ratio not kept), normalise."""
    n_px: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image).resize((self.n_px, self.n_px), Image.BICUBIC)
        return to_normalized_tensor(image)


def clip_preprocess(n_px: int) -> ClipPreprocess:
    """CLIP's evaluation transform at n_px (224 for ViT-B/32 embeddings)."""
    return ClipPreprocess(n_px)


def grid_preprocess(n_px: int = 448, keep_aspect: bool = False) -> ClipPreprocess | SquarePreprocess:
    """The grid-feature transform. Default: the original's square resize to 448 (distorts the aspect
    ratio, as the released features do); keep_aspect=True: shorter side to n_px + centre crop."""
    return ClipPreprocess(n_px) if keep_aspect else SquarePreprocess(n_px)
