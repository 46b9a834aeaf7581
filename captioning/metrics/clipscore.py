"""CLIP-S, RefCLIP-S (both variants) and the grammar probability: the one CLIP-scoring module.

The reward (``captioning.rewards``), validation and test, the report, ``tools/clipscore.py`` and
the web demo all score through :class:`CLIPScorer`.

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

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from clip.grammar import GrammarCLIP, load_grammar_clip

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
    """Scores captions with a frozen CLIP (and its grammar head, when it has one).

    Text is ``"<prompt> <caption>"`` (``prompt=""``: the caption alone), truncated to the CLIP's
    context; each call encodes every unique string once, in chunks of ``batch_size`` (None: all at
    once, as the reward does), under no_grad, and the text transformer runs only up to the chunk's
    longest sequence. Reference
    features are cached by string across calls (references repeat every epoch); candidate
    features are not. Image features are precomputed CLIP-S embeddings. Not an ``nn.Module``
    attribute of the captioner, so it is neither trained nor saved in its checkpoints.
    """

    def __init__(self, model: GrammarCLIP, prompt: str = PROMPT, w: float = CLIP_S_WEIGHT,
                 batch_size: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval().requires_grad_(False) if isinstance(model, torch.nn.Module) else model
        self.prompt, self.w, self.batch_size = prompt, w, batch_size
        self._ref_cache: dict[str, Tensor] = {}

    @property
    def has_grammar_head(self) -> bool:
        return self.model.grammar_head is not None

    def to(self, device: torch.device | str) -> "CLIPScorer":
        """Move the model (and cached reference features) to ``device``; a no-op when already there."""
        device = torch.device(device)
        if self.model.device != device:
            self.model.to(device)
            self._ref_cache = {k: v.to(device) for k, v in self._ref_cache.items()}
        return self

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(pre-projection pooled features (N, W), projected embeddings (N, D)) of the captions; the
        formulas above normalise, so the embeddings are used as the model returns them."""
        if not captions:
            raise ValueError("encode needs at least one caption")
        unique = list(dict.fromkeys(captions))
        step = self.batch_size or len(unique)
        pooled, emb = [], []
        for i in range(0, len(unique), step):
            chunk = unique[i : i + step]
            p, e = self.model.text_features(self.model.tokenize(chunk, self.prompt))
            if e.dim() != 2 or e.shape[0] != len(chunk):
                raise ValueError(f"text_features returned shape {tuple(e.shape)} for {len(chunk)} texts")
            pooled.append(p.float())
            emb.append(e.float())
        pooled_t, emb_t = torch.cat(pooled), torch.cat(emb)
        if len(unique) == len(captions):
            return pooled_t, emb_t
        row = {text: i for i, text in enumerate(unique)}
        index = torch.tensor([row[c] for c in captions], device=emb_t.device)
        return pooled_t[index], emb_t[index]

    def reference_features(self, references: Sequence[Sequence[str]], like: Tensor) -> tuple[Tensor, Tensor]:
        """Padded reference embeddings (B, K, D) and their mask (B, K), from the cache where possible."""
        missing = list(dict.fromkeys(r for refs in references for r in refs if r not in self._ref_cache))
        if missing:
            self._ref_cache.update(zip(missing, self.encode(missing)[1]))
        k = max((len(r) for r in references), default=0)
        feats = like.new_zeros(len(references), k, like.shape[1])
        mask = torch.zeros(len(references), k, dtype=torch.bool, device=like.device)
        for i, refs in enumerate(references):
            if refs:
                feats[i, : len(refs)] = torch.stack([self._ref_cache[r] for r in refs]).to(like)
                mask[i, : len(refs)] = True
        return feats, mask

    def clip_s(self, image_feats: Tensor, text_emb: Tensor) -> Tensor:
        """CLIP-S of paired rows (N, D)."""
        return clip_s(image_feats.to(text_emb), text_emb, self.w)

    def refclip_s(self, scores: Tensor, text_emb: Tensor, references: Sequence[Sequence[str]]) -> Tensor:
        """The original's RefCLIP-S of each row, given its CLIP-S ``scores`` and reference strings."""
        if len(references) != len(scores):
            raise ValueError(f"got {len(references)} reference lists for {len(scores)} captions")
        feats, mask = self.reference_features(references, text_emb)
        return refclip_s(scores.to(text_emb), text_emb, feats, mask, self.w)

    def refclip_s_hessel(self, scores: Tensor, text_emb: Tensor, references: Sequence[Sequence[str]]) -> Tensor:
        """Hessel et al.'s RefCLIP-S of each row."""
        if len(references) != len(scores):
            raise ValueError(f"got {len(references)} reference lists for {len(scores)} captions")
        feats, mask = self.reference_features(references, text_emb)
        return refclip_s_hessel(scores.to(text_emb), text_emb, feats, mask)

    @torch.no_grad()
    def grammar(self, pooled: Tensor) -> Tensor:
        """P(grammatical) from the grammar head (N,)."""
        return self.model.grammar_prob(pooled.to(self.model.device)).float()

    def score(self, image_feats: Tensor, captions: Sequence[str],
              references: Sequence[Sequence[str]] | None = None) -> dict[str, Tensor]:
        """Per-caption ``CLIP-S`` and, given references, ``RefCLIP-S`` and ``RefCLIP-S-Hessel`` (B,)."""
        if not captions:
            raise ValueError("score needs at least one caption")
        if image_feats.dim() != 2 or image_feats.shape[0] != len(captions):
            raise ValueError(f"need (B, D) image features for {len(captions)} captions, got {tuple(image_feats.shape)}")
        if references is not None and len(references) != len(captions):
            raise ValueError(f"got {len(references)} reference lists for {len(captions)} captions")
        emb = self.encode(captions)[1].to(image_feats.device)
        out = {"CLIP-S": self.clip_s(image_feats.float(), emb)}
        if references is not None:
            out["RefCLIP-S"] = self.refclip_s(out["CLIP-S"], emb, references)
            out["RefCLIP-S-Hessel"] = self.refclip_s_hessel(out["CLIP-S"], emb, references)
        return out


def load_scorer(source: str, device: torch.device | str = "cpu", **kwargs) -> CLIPScorer:
    """A :class:`CLIPScorer` over anything :func:`clip.grammar.load_grammar_clip` accepts."""
    return CLIPScorer(load_grammar_clip(source, device=device), **kwargs)
