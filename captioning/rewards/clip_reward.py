"""Which CLIP the CLIP-S rewards and their validation metrics use (docs/ORIGINAL.md §4.5, §4.7).

Scoring itself (prompt, CLIP-S = 2.5 * max(cos, 0), RefCLIP-S, the grammar probability, caching)
is :class:`captioning.metrics.clipscore.CLIPScorer`. With a fine-tuned grammar CLIP as
``clip_load_path``, the reward's CLIP-S also uses the fine-tuned text encoder (as the original).
"""
from __future__ import annotations

from captioning.config import RewardConfig


def reward_clip_source(r: RewardConfig) -> str:
    """The reward CLIP: ``clip_load_path`` when set (e.g. the grammar CLIP), else ``clip_model``."""
    return r.clip_load_path or r.clip_model


def eval_clip_source(r: RewardConfig) -> str:
    """The CLIP of validation CLIP-S / RefCLIP-S: the reward CLIP, except with ``use_grammar``,
    where ``clip_model`` (not fine-tuned) is used as in the original (docs/ORIGINAL.md §4.1, §4.7)."""
    return r.clip_model if r.use_grammar else reward_clip_source(r)
