"""Caption arbitrary images with a trained checkpoint: CLIP grid features -> captioner -> text.

    from captioning.inference import Captioner
    captioner = Captioner.from_checkpoint("save/clipRN50_clips/clipRN50_clips-last.ckpt")
    captioner.caption(["photo.jpg", pil_image])

The CLIP and the grid resolution default to those the checkpoint's training features were made
with (config keys ``feature_clip_model``, ``feature_resolution``); decoding uses the checkpoint's
``decode`` settings, so a checkpoint captions an image here exactly as ``EVALUATE=1`` does.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

import clip
from captioning.checkpoints import read_captioner_checkpoint
from captioning.cli import InputError
from captioning.config import Config, config_from_dict
from captioning.models import decode_sequence
from captioning.models.configured import build_captioner, decode_configured
from clip.images import open_rgb, to_rgb

ImageLike = str | os.PathLike | Image.Image


def open_image(image: ImageLike) -> Image.Image:
    """A PIL image from a path (any format PIL reads), or the image itself."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    return open_rgb(image)


class Captioner:
    """A captioner plus the CLIP that turns images into its grid features.

    Decoding follows the checkpoint's ``decode`` settings (beam size, ``suppress_UNK``,
    ``block_trigrams``, ``remove_bad_endings``, ...), exactly as ``EVALUATE=1`` does, unless
    ``beam_size`` overrides the beam size.
    """

    def __init__(self, model: torch.nn.Module, vocab: dict[str, str], clip_model: clip.CLIP, resolution: int,
                 keep_aspect: bool = False, beam_size: int | None = None, cfg: Config | None = None,
                 device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.clip = clip_model.to(device).eval()
        self.preprocess = clip.transforms.grid_preprocess(resolution, keep_aspect=keep_aspect)
        self.cfg = copy.deepcopy(cfg) if cfg is not None else Config()
        if beam_size is not None:
            if beam_size < 1:
                raise InputError(f"beam_size must be >= 1, got {beam_size}")
            self.cfg.decode.beam_size = beam_size
        self.device = torch.device(device)

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | os.PathLike, clip_model: str | None = None, resolution: int | None = None,
                        beam_size: int | None = None, device: str | None = None, **kwargs: Any) -> "Captioner":
        """Load a checkpoint (ours or the original's: weights, vocabulary, config) and its feature CLIP."""
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r} requested but CUDA is not available in this PyTorch build or machine; "
                             "use --device cpu")
        if resolution is not None and resolution < 32:
            raise InputError(f"resolution must be >= 32 (CLIP's grid stride), got {resolution}")
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
        state, vocab, flat = read_captioner_checkpoint(ckpt_path)
        cfg = config_from_dict(flat, source=str(ckpt_path))
        model = build_captioner(cfg, len(vocab))
        model.load_state_dict(state, strict=True)
        feature_clip, _ = clip.load(clip_model or cfg.data.feature_clip_model, device=device)
        return cls(model, vocab, feature_clip, resolution or cfg.data.feature_resolution, beam_size=beam_size,
                   cfg=cfg, device=device, **kwargs)

    @torch.inference_mode()
    def features(self, images: list[ImageLike]) -> torch.Tensor:
        """(N, h*w, C) grid features, row-major over (row, column), as the training features (any CLIP family)."""
        batch = torch.stack([self.preprocess(open_image(im)) for im in images]).to(self.device)
        grid = self.clip.visual_grid(batch).float()
        return grid.flatten(2).transpose(1, 2)

    @torch.inference_mode()
    def caption(self, images: list[ImageLike], batch_size: int = 16, beam_size: int | None = None,
                progress: bool = False) -> list[str]:
        """One caption per image, decoded with the checkpoint's decoding settings (``beam_size`` overrides
        its beam size for this call)."""
        cfg = self.cfg
        if beam_size is not None:
            if beam_size < 1:
                raise InputError(f"beam_size must be >= 1, got {beam_size}")
            cfg = copy.deepcopy(self.cfg)
            cfg.decode.beam_size = beam_size
        out: list[str] = []
        for start in tqdm(range(0, len(images), batch_size), desc="captioning", unit="batch", disable=not progress):
            feats = self.features(images[start : start + batch_size])
            seq = decode_configured(self.model, self.vocab, cfg, feats, None).seq
            out += decode_sequence(self.vocab, seq, remove_bad_endings=bool(cfg.decode.remove_bad_endings))
        return out
