"""Caption arbitrary images with a trained checkpoint: CLIP grid features -> captioner -> text.

    from captioning.inference import Captioner
    captioner = Captioner.from_checkpoint("save/clipRN50_clips/clipRN50_clips-last.ckpt")
    captioner.caption(["photo.jpg", pil_image])

The CLIP and the grid resolution default to those the checkpoint's training features were made
with (config keys ``feature_clip_model``, ``feature_resolution``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

import clip
from captioning.checkpoints import read_captioner_checkpoint
from captioning.config import Config, config_from_dict
from captioning.models import beam_search, decode_sequence, sample
from captioning.training.module import build_captioner

ImageLike = str | os.PathLike | Image.Image


def open_image(image: ImageLike) -> Image.Image:
    """A PIL image from a path (any format PIL reads), or the image itself."""
    if isinstance(image, Image.Image):
        return image
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable image ({e})") from None


class Captioner:
    """A captioner plus the CLIP that turns images into its grid features."""

    def __init__(self, model: torch.nn.Module, vocab: dict[str, str], clip_model: clip.CLIP, resolution: int,
                 keep_aspect: bool = False, beam_size: int = 1, max_length: int = 20, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.clip = clip_model.to(device).eval()
        self.preprocess = clip.transforms.grid_preprocess(resolution, keep_aspect=keep_aspect)
        self.beam_size, self.max_length, self.device = beam_size, max_length, torch.device(device)
        self.config: Config | None = None  # the checkpoint's configuration (from_checkpoint)

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | os.PathLike, clip_model: str | None = None, resolution: int | None = None,
                        beam_size: int = 1, device: str | None = None, **kwargs: Any) -> "Captioner":
        """Load a checkpoint (ours or the original's: weights, vocabulary, config) and its feature CLIP."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
        state, vocab, flat = read_captioner_checkpoint(ckpt_path)
        cfg = config_from_dict(flat, source=str(ckpt_path))
        model = build_captioner(cfg, len(vocab))
        model.load_state_dict(state, strict=True)
        feature_clip, _ = clip.load(clip_model or cfg.data.feature_clip_model, device=device)
        captioner = cls(model, vocab, feature_clip, resolution or cfg.data.feature_resolution, beam_size=beam_size,
                        max_length=cfg.model.max_length, device=device, **kwargs)
        captioner.config = cfg
        return captioner

    @torch.inference_mode()
    def features(self, images: list[ImageLike]) -> torch.Tensor:
        """(N, H*W, C) grid features, row-major over (row, column), as the training features."""
        batch = torch.stack([self.preprocess(open_image(im)) for im in images]).to(self.device)
        grid = self.clip.visual_grid(batch).float()
        return grid.flatten(2).transpose(1, 2)

    @torch.inference_mode()
    def caption(self, images: list[ImageLike], batch_size: int = 16, beam_size: int | None = None,
                progress: bool = False) -> list[str]:
        """One caption per image (greedy, or beam search with ``beam_size`` > 1; default: the captioner's)."""
        beam_size = beam_size or self.beam_size
        out: list[str] = []
        for start in tqdm(range(0, len(images), batch_size), desc="captioning", unit="batch", disable=not progress):
            feats = self.features(images[start : start + batch_size])
            if beam_size > 1:
                seq = beam_search(self.model, feats, None, beam_size=beam_size, max_length=self.max_length).seq
            else:
                seq = sample(self.model, feats, None, method="greedy", max_length=self.max_length).seq
            out += decode_sequence(self.vocab, seq)
        return out
