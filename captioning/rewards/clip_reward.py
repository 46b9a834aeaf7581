"""CLIP-S and grammar scores of decoded captions with a frozen CLIP (docs/ORIGINAL.md §4.5).

Text is the decoded word string (UNK appears literally as ``UNK``) prefixed with
``"A photo depicts "``; one batch is encoded at a time, under no_grad, each unique string once,
and the transformer runs only up to the batch's longest sequence (``clip`` does that). Image
features are the precomputed CLIP-S embeddings (``batch['clip_vis_feats']``).

* CLIP-S = 2.5 * max(cos(text, image), 0).
* RefCLIP-S (``clipscore_mode: refclip_s``, the original's variant): harmonic mean of CLIP-S and
  2.5 * max over references of max(cos(text, reference text), 0); reference features are cached
  by string.
* grammar = P("grammatical") from the grammar head on the same pre-projection text features, so
  with a fine-tuned grammar CLIP, CLIP-S also uses the fine-tuned text encoder (as the original).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captioning.config import RewardConfig
from captioning.metrics.clipscore import CLIP_S_WEIGHT, PROMPT, clip_s, refclip_s
from clip.grammar import GrammarCLIP, load_grammar_clip


class RewardCLIP:
    """A frozen :class:`GrammarCLIP` that scores captions; not an ``nn.Module`` attribute of the
    captioner, so it is neither trained nor saved in its checkpoints."""

    def __init__(self, model: GrammarCLIP, prompt: str = PROMPT, w: float = CLIP_S_WEIGHT):
        self.model = model.eval().requires_grad_(False)
        self.prompt = prompt
        self.w = w
        self._ref_cache: dict[str, Tensor] = {}

    @property
    def has_grammar_head(self) -> bool:
        return self.model.grammar_head is not None

    def to(self, device: torch.device | str) -> "RewardCLIP":
        """Move the model (and cached reference features) to ``device``; a no-op when already there."""
        device = torch.device(device)
        if self.model.device != device:
            self.model.to(device)
            self._ref_cache = {k: v.to(device) for k, v in self._ref_cache.items()}
        return self

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(pre-projection pooled (N, W), L2-normalised embeddings (N, D)); each unique string once."""
        if not captions:
            raise ValueError("encode needs at least one caption")
        unique = list(dict.fromkeys(captions))
        pooled, emb = self.model.text_features(self.model.tokenize(unique, self.prompt))
        if len(unique) == len(captions):
            return pooled.float(), emb.float()
        row = {text: i for i, text in enumerate(unique)}
        index = torch.tensor([row[c] for c in captions], device=pooled.device)
        return pooled.float()[index], emb.float()[index]

    def clip_s(self, image_feats: Tensor, text_emb: Tensor) -> Tensor:
        """2.5 * max(cos, 0) of paired rows (N, D)."""
        return clip_s(image_feats.to(text_emb), text_emb, self.w)

    @torch.no_grad()
    def refclip_s(self, scores: Tensor, text_emb: Tensor, references: Sequence[Sequence[str]]) -> Tensor:
        """The original's RefCLIP-S of each row given its CLIP-S ``scores`` and reference strings."""
        if len(references) != len(scores):
            raise ValueError(f"got {len(references)} reference lists for {len(scores)} captions")
        missing = list(dict.fromkeys(r for refs in references for r in refs if r not in self._ref_cache))
        if missing:
            self._ref_cache.update(zip(missing, self.encode(missing)[1]))
        k = max(len(r) for r in references)
        ref_feats = text_emb.new_zeros(len(references), k, text_emb.shape[1])
        ref_mask = torch.zeros(len(references), k, dtype=torch.bool, device=text_emb.device)
        for i, refs in enumerate(references):
            if refs:
                ref_feats[i, : len(refs)] = torch.stack([self._ref_cache[r] for r in refs])
                ref_mask[i, : len(refs)] = True
        return refclip_s(scores, text_emb, ref_feats, ref_mask, self.w)

    @torch.no_grad()
    def grammar(self, pooled: Tensor) -> Tensor:
        """P(grammatical) from the grammar head (N,)."""
        return self.model.grammar_prob(pooled.to(self.model.device)).float()


def reward_clip_source(r: RewardConfig) -> str:
    """The reward CLIP: ``clip_load_path`` when set (e.g. the grammar CLIP), else ``clip_model``."""
    return r.clip_load_path or r.clip_model


def eval_clip_source(r: RewardConfig) -> str:
    """The CLIP of validation CLIP-S / RefCLIP-S: the reward CLIP, except with ``use_grammar``,
    where ``clip_model`` (not fine-tuned) is used as in the original (docs/ORIGINAL.md §4.1, §4.7)."""
    return r.clip_model if r.use_grammar else reward_clip_source(r)


def load_reward_clip(source: str, device: torch.device | str = "cpu") -> RewardCLIP:
    """A frozen :class:`RewardCLIP` from anything :func:`load_grammar_clip` accepts."""
    return RewardCLIP(load_grammar_clip(source, device=device))
