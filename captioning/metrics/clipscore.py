"""CLIP-S and RefCLIP-S over CLIP embeddings, and a scorer that works with any text encoder.

Definitions (all features are L2-normalised here first; cos = dot product):

* CLIP-S(c, v) = w * max(cos(c, v), 0), w = 2.5 (Hessel et al., EMNLP 2021, eq. 1; the original's
  ``calc_clip_s``).
* ``RefCLIP-S`` as the original computes it (``captioning/utils/clipscore.calc_refclip_s``):
  the harmonic mean of CLIP-S and R = max over valid references r of w * max(cos(c, r), 0), i.e.
  the reference side is scaled by w too. Masked (padding) references score 0 before the max.
* ``RefCLIP-S-Hessel`` as defined by Hessel et al. (eq. 2): H-Mean(CLIP-S(c, v),
  max(max_r cos(c, r), 0)), the reference side *without* w. Their released code
  (jmhessel/clipscore, ``get_refonlyclipscore``) takes the max cosine over references and the F-score
  ``2ab / (a + b)``; it omits the clamp at 0, which only matters when every reference has a
  negative cosine (the harmonic mean is then set to 0 here). Both encode candidates and
  references with the same ``"A photo depicts"`` prompt.

The harmonic mean is defined as 0 whenever either side is 0 (the original's ``2 / (1/a + 1/b)``
gives the same through infinities).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

CLIP_S_WEIGHT = 2.5
PROMPT = "A photo depicts"


def harmonic_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise 2ab / (a + b) for non-negative inputs, 0 where either is 0."""
    both = (a > 0) & (b > 0)
    safe_sum = torch.where(both, a + b, torch.ones_like(a))
    return torch.where(both, 2 * a * b / safe_sum, torch.zeros_like(a))


def clip_s(image_feats: torch.Tensor, text_feats: torch.Tensor, w: float = CLIP_S_WEIGHT) -> torch.Tensor:
    """CLIP-S for paired rows: (B, D) image and (B, D) text features -> (B,)."""
    if image_feats.shape != text_feats.shape or image_feats.dim() != 2:
        raise ValueError(f"need matching (B, D) features, got {tuple(image_feats.shape)} and {tuple(text_feats.shape)}")
    cos = (F.normalize(image_feats, dim=-1) * F.normalize(text_feats, dim=-1)).sum(-1)
    return w * cos.clamp(min=0)


def max_ref_cos(cand_feats: torch.Tensor, ref_feats: torch.Tensor, ref_mask: torch.Tensor) -> torch.Tensor:
    """max over valid references of max(cos(cand, ref), 0): (B, D), (B, K, D), (B, K) bool -> (B,).

    Rows without any valid reference give 0.
    """
    if ref_feats.dim() != 3 or ref_feats.shape[0] != cand_feats.shape[0] or ref_feats.shape[2] != cand_feats.shape[1]:
        raise ValueError(f"need (B, K, D) references for (B, D) candidates, got {tuple(ref_feats.shape)}")
    if ref_mask.shape != ref_feats.shape[:2]:
        raise ValueError(f"ref_mask must be (B, K) = {tuple(ref_feats.shape[:2])}, got {tuple(ref_mask.shape)}")
    cos = torch.einsum("bd,bkd->bk", F.normalize(cand_feats, dim=-1), F.normalize(ref_feats, dim=-1))
    cos = cos.clamp(min=0) * ref_mask.to(cos.dtype)
    return cos.max(dim=1).values if cos.shape[1] else cos.new_zeros(cos.shape[0])


def refclip_s(
    clip_scores: torch.Tensor,
    cand_feats: torch.Tensor,
    ref_feats: torch.Tensor,
    ref_mask: torch.Tensor,
    w: float = CLIP_S_WEIGHT,
) -> torch.Tensor:
    """The original's RefCLIP-S: H-Mean(CLIP-S, w * max_r max(cos(c, r), 0)) -> (B,)."""
    return harmonic_mean(clip_scores, w * max_ref_cos(cand_feats, ref_feats, ref_mask))


def refclip_s_hessel(
    clip_scores: torch.Tensor, cand_feats: torch.Tensor, ref_feats: torch.Tensor, ref_mask: torch.Tensor
) -> torch.Tensor:
    """Hessel et al.'s RefCLIP-S: H-Mean(CLIP-S, max(max_r cos(c, r), 0)) -> (B,)."""
    return harmonic_mean(clip_scores, max_ref_cos(cand_feats, ref_feats, ref_mask))


class CLIPScorer:
    """CLIP-S / RefCLIP-S for captions against precomputed image embeddings.

    ``encode_text`` maps a list of strings to (N, D) features (any CLIP; normalised here). Each
    call encodes every unique string once, in chunks of ``batch_size``; reference features are
    cached by string across calls (references repeat every epoch), candidate features are not.
    The prompt is prepended with a space (``"A photo depicts a dog"``); ``prompt=""`` disables it.
    """

    def __init__(
        self,
        encode_text: Callable[[list[str]], torch.Tensor],
        prompt: str = PROMPT,
        w: float = CLIP_S_WEIGHT,
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.encode_text = encode_text
        self.prompt = prompt
        self.w = w
        self.batch_size = batch_size
        self._ref_cache: dict[str, torch.Tensor] = {}

    def _prompted(self, text: str) -> str:
        return f"{self.prompt} {text}" if self.prompt else text

    def _encode_unique(self, texts: list[str]) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        for i in range(0, len(texts), self.batch_size):
            chunk = texts[i : i + self.batch_size]
            with torch.no_grad():
                out = self.encode_text([self._prompted(t) for t in chunk])
            if out.dim() != 2 or out.shape[0] != len(chunk):
                raise ValueError(f"encode_text returned shape {tuple(out.shape)} for {len(chunk)} texts")
            out = F.normalize(out.float(), dim=-1)
            feats.update(zip(chunk, out))
        return feats

    def encode(self, texts: Sequence[str], cache: bool = False) -> torch.Tensor:
        """Normalised prompted text features (N, D); with ``cache`` they are kept by string."""
        unique = list(dict.fromkeys(texts))
        if cache:
            missing = [t for t in unique if t not in self._ref_cache]
            self._ref_cache.update(self._encode_unique(missing))
            table = self._ref_cache
        else:
            table = self._encode_unique(unique)
        return torch.stack([table[t] for t in texts])

    def clear_cache(self) -> None:
        self._ref_cache.clear()

    def score(
        self,
        image_feats: torch.Tensor,
        captions: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-caption ``CLIP-S`` and, given references, ``RefCLIP-S`` and ``RefCLIP-S-Hessel`` (B,)."""
        if not captions:
            raise ValueError("score needs at least one caption")
        if image_feats.dim() != 2 or image_feats.shape[0] != len(captions):
            raise ValueError(f"need (B, D) image features for {len(captions)} captions, got {tuple(image_feats.shape)}")
        image_feats = image_feats.float()
        cand = self.encode(captions).to(image_feats.device)
        out = {"CLIP-S": clip_s(image_feats, cand, self.w)}
        if references is None:
            return out
        if len(references) != len(captions):
            raise ValueError(f"got {len(references)} reference lists for {len(captions)} captions")
        k = max((len(r) for r in references), default=0)
        flat = [r for refs in references for r in refs]
        ref_flat = self.encode(flat, cache=True).to(image_feats.device) if flat else cand.new_zeros(0, cand.shape[1])
        ref_feats = cand.new_zeros(len(captions), k, cand.shape[1])
        ref_mask = torch.zeros(len(captions), k, dtype=torch.bool, device=cand.device)
        start = 0
        for i, refs in enumerate(references):
            ref_feats[i, : len(refs)] = ref_flat[start : start + len(refs)]
            ref_mask[i, : len(refs)] = True
            start += len(refs)
        out["RefCLIP-S"] = refclip_s(out["CLIP-S"], cand, ref_feats, ref_mask, self.w)
        out["RefCLIP-S-Hessel"] = refclip_s_hessel(out["CLIP-S"], cand, ref_feats, ref_mask)
        return out
