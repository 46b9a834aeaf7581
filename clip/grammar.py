"""A CLIP with an optional grammar head: what the CLIP-S (+ grammar) reward and evaluation load.

The grammar head (docs/ORIGINAL.md §4.5, §6.2) is Linear(W->W, no bias) -> ReLU -> Linear(W->2, no
bias) over the *pre-projection* text feature (the final-LayerNorm state at EOT, width W =
``transformer_width``); class 1 means "grammatical".

Files :func:`load_grammar_clip` accepts (``clip_load_path``):

* anything :func:`clip.load` accepts (an OpenAI model name or file, a plain OpenAI-layout state
  dict): CLIP only, no grammar head;
* a grammar-CLIP file, a dict ``{"state_dict": {"clip.<OpenAI-layout key>": ..., "grammar_head.0.weight":
  (W, W), "grammar_head.2.weight": (2, W)}}`` (:func:`grammar_clip_file` builds it; the retrieval
  trainer writes it), or a Lightning checkpoint of ``retrieval/train_pl.py`` whose ``state_dict``
  has those keys (optionally under a ``model.`` prefix).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip.model import CLIP, build_model
from clip.pretrained import is_torchscript_archive, load, torch_load
from clip.tokenizer import tokenize


def grammar_head(width: int) -> nn.Sequential:
    """The original's two-layer, bias-free grammar head."""
    return nn.Sequential(nn.Linear(width, width, bias=False), nn.ReLU(), nn.Linear(width, 2, bias=False))


class GrammarCLIP(nn.Module):
    """``clip`` (a :class:`clip.CLIP`) and, optionally, ``grammar_head``."""

    def __init__(self, clip_model: CLIP, with_head: bool = True):
        super().__init__()
        self.clip = clip_model
        self.grammar_head = grammar_head(clip_model.ln_final.weight.shape[0]) if with_head else None

    @property
    def device(self) -> torch.device:
        return self.clip.text_projection.device

    def tokenize(self, texts: list[str], prompt: str | None = None) -> Tensor:
        """Token ids (truncated to the context length), optionally prefixed with ``prompt + ' '``."""
        if prompt:
            texts = [f"{prompt} {t}" for t in texts]
        return tokenize(texts, context_length=self.clip.context_length, truncate=True).to(self.device)

    def text_features(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(pre-projection pooled features, L2-normalised projected embeddings)."""
        pooled = self.clip.encode_text_pooled(tokens)
        return pooled, F.normalize(pooled @ self.clip.text_projection, dim=-1)

    def grammar_logits(self, pooled: Tensor) -> Tensor:
        if self.grammar_head is None:
            raise RuntimeError("this CLIP has no grammar head; load a grammar-CLIP file (retrieval/train_pl.py)")
        return self.grammar_head(pooled)

    def grammar_prob(self, pooled: Tensor) -> Tensor:
        """P(grammatical) = softmax(head(pooled))[:, 1]."""
        return self.grammar_logits(pooled).softmax(-1)[:, 1]


def grammar_clip_file(model: GrammarCLIP) -> dict[str, Any]:
    """The content of a grammar-CLIP file (plain CPU tensors only), for ``torch.save``."""
    return {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def load_grammar_clip(name_or_path: str | os.PathLike, device: str | torch.device = "cpu") -> GrammarCLIP:
    """Load a grammar-CLIP file, a retrieval checkpoint, or any CLIP :func:`clip.load` accepts."""
    path = Path(name_or_path)
    if path.is_file() and not is_torchscript_archive(path):  # OpenAI's release files are TorchScript: clip.load
        ckpt = torch_load(path)
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if state is not None:
            state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
            if any(k.startswith("clip.") for k in state):
                clip_state = {k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}
                head = {k[len("grammar_head."):]: v for k, v in state.items() if k.startswith("grammar_head.")}
                model = GrammarCLIP(build_model(clip_state), with_head=bool(head))
                if head:
                    model.grammar_head.load_state_dict(head, strict=True)
                return model.to(device).eval()
    clip_model, _ = load(str(name_or_path), device=device)
    return GrammarCLIP(clip_model, with_head=False).to(device).eval()
