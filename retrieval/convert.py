"""The original's released grammar CLIP -> our grammar-CLIP file.

The original's ``retrieval/train_pl.py`` checkpoint (docs/ORIGINAL.md §6.3) is a Lightning 1.0 file whose
``state_dict`` holds a Hugging Face ``CLIPModel`` under ``clip_model.*`` and the grammar head as
``grammar_score_head.0.weight`` (W, W) and ``grammar_score_head.2.weight`` (2, W). The CLIP keys
are mapped by :func:`clip.hf.hf_to_openai`, the head keys become ``grammar_head.{0,2}.weight``,
and the result is written by :func:`retrieval.export.save_grammar_clip`, which
``load_grammar_clip`` (``clip_load_path``) reads.
"""
from __future__ import annotations

import os

from torch import Tensor

import clip
from captioning.checkpoints import checkpoint_state_dict, load_lightning_checkpoint
from clip.grammar import GrammarCLIP
from clip.hf import hf_to_openai
from retrieval.export import save_grammar_clip

CLIP_PREFIX = "clip_model."
HEAD_KEYS = {"grammar_score_head.0.weight": "0.weight", "grammar_score_head.2.weight": "2.weight"}


def grammar_clip_from_original(state: dict[str, Tensor]) -> GrammarCLIP:
    """Our :class:`GrammarCLIP` from the original's ``state_dict`` (``model.`` prefixes tolerated)."""
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    other = [k for k in state if not k.startswith(CLIP_PREFIX) and k not in HEAD_KEYS]
    if other:
        raise ValueError(f"unexpected keys for an original grammar CLIP (clip_model.* and grammar_score_head.*): "
                         f"{other[:8]}")
    missing = [k for k in HEAD_KEYS if k not in state]
    if missing:
        raise ValueError(f"no grammar head in the checkpoint: missing {missing}")
    hf_state = {k[len(CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    model = GrammarCLIP(clip.build_model(hf_to_openai(hf_state)), with_head=True)
    model.grammar_head.load_state_dict({HEAD_KEYS[k]: state[k].float() for k in HEAD_KEYS}, strict=True)
    return model.eval()


def convert_grammar_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> GrammarCLIP:
    """Read the original's grammar-CLIP checkpoint ``src``, write our grammar-CLIP file ``dst``."""
    ckpt = load_lightning_checkpoint(src)
    model = grammar_clip_from_original(checkpoint_state_dict(ckpt, src))
    save_grammar_clip(model, dst)
    return model
