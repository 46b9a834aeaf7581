"""The files the retrieval trainer hands to the rest of the project, written atomically."""
from __future__ import annotations

import os
from pathlib import Path

import torch

import clip
from captioning.utils.io import atomic_path
from clip.grammar import GrammarCLIP, grammar_clip_file


def save_grammar_clip(model: GrammarCLIP, path: str | os.PathLike) -> None:
    """Write a grammar-CLIP file (:func:`clip.grammar.load_grammar_clip` reads it)."""
    with atomic_path(path) as tmp:
        torch.save(grammar_clip_file(model), tmp)


def export_clip(model: clip.CLIP, path: str | Path, fp16: bool = False) -> None:
    """Write an OpenAI-layout state dict that ``clip.load(path)`` reads (floats as fp16 if asked)."""
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
