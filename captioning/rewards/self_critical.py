"""The self-critical reward: weighted terms, each against a baseline (docs/ORIGINAL.md §4.4).

Terms by configuration (the original's branches; ``w_*`` are config keys):

* no ``use_clipscore``:                 w_cider * CIDEr-D  [+ w_bleu * BLEU-4]
* ``use_clipscore``:                    w_clip * CLIP-S    (``clipscore_reward_weight``, 2.0 in the configs)
* ``+ use_multi_rewards``:              w_clip * CLIP-S + w_cider * CIDEr-D  [+ w_bleu * BLEU-4]
* ``+ use_multi_rewards + use_grammar``: w_clip * CLIP-S + 1.0 * grammar  (no CIDEr-D)

Every term is baselined (greedy caption or leave-one-out mean, ``sc_baseline``) except the
grammar term without ``use_grammar_baseline``. ``clipscore_mode: refclip_s`` makes the CLIP
term RefCLIP-S. The advantage of sample k of image i is
sum over terms of w * (score(i, k) - baseline(i, k)); rewards are neither normalised nor clipped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from captioning.config import Config, RewardConfig
from captioning.metrics.clipscore import CLIPScorer, load_scorer
from captioning.models import decode_sequence
from captioning.rewards.baselines import greedy_baseline, leave_one_out_baseline
from captioning.rewards.cider_reward import CiderReward, bleu4_reward, cider_df_path
from captioning.rewards.clip_reward import reward_clip_source

GRAMMAR_WEIGHT = 1.0  # fixed in the original


@dataclass(frozen=True)
class RewardTerm:
    """One weighted score; ``name`` is one of CIDEr, Bleu_4, CLIP-S, RefCLIP-S, grammar."""

    name: str
    weight: float
    baselined: bool = True


def reward_terms(r: RewardConfig) -> list[RewardTerm]:
    """The terms of the configured reward; inconsistent settings are errors."""
    if r.use_multi_rewards and not r.use_clipscore:
        raise ValueError("use_multi_rewards needs use_clipscore (CLIP-S is one of the rewards)")
    if r.use_grammar and not r.use_multi_rewards:
        raise ValueError("use_grammar needs use_multi_rewards and use_clipscore (reward = CLIP-S + grammar)")
    if r.clipscore_mode not in ("clip_s", "refclip_s"):
        raise ValueError(f"clipscore_mode must be 'clip_s' or 'refclip_s', got {r.clipscore_mode!r}")
    terms = []
    if not r.use_clipscore or (r.use_multi_rewards and not r.use_grammar):
        if r.cider_reward_weight:
            terms.append(RewardTerm("CIDEr", r.cider_reward_weight))
        if r.bleu_reward_weight:
            terms.append(RewardTerm("Bleu_4", r.bleu_reward_weight))
    if r.use_clipscore:
        name = "CLIP-S" if r.clipscore_mode == "clip_s" else "RefCLIP-S"
        terms.append(RewardTerm(name, r.clipscore_reward_weight))
    if r.use_grammar:
        terms.append(RewardTerm("grammar", GRAMMAR_WEIGHT, baselined=r.use_grammar_baseline))
    if not terms:
        raise ValueError("the reward has no term: cider_reward_weight and bleu_reward_weight are 0 and "
                         "use_clipscore is off")
    return terms


@dataclass
class RewardOutput:
    """``advantage`` (B*K,) per sample; ``stats`` the logged means (see :meth:`SelfCriticalReward.__call__`)."""

    advantage: Tensor
    stats: dict[str, float]


class SelfCriticalReward:
    """Scores sampled captions with the configured terms and subtracts the baseline.

    ``cider`` is needed for the CIDEr term, ``clip`` for the CLIP and grammar terms (with a
    grammar head for the latter). Build it once: the CIDEr-D df index and the CLIP are reused
    at every step.
    """

    def __init__(self, terms: Sequence[RewardTerm], vocab: Mapping[str, str], baseline: str = "greedy",
                 cider: CiderReward | None = None, clip: CLIPScorer | None = None,
                 remove_bad_endings: bool = False):
        if baseline not in ("greedy", "mean"):
            raise ValueError(f"sc_baseline must be 'greedy' or 'mean', got {baseline!r}")
        names = {t.name for t in terms}
        if "CIDEr" in names and cider is None:
            raise ValueError("the CIDEr-D term needs a CiderReward")
        if names & {"CLIP-S", "RefCLIP-S", "grammar"} and clip is None:
            raise ValueError("the CLIP-S and grammar terms need a CLIPScorer")
        if "grammar" in names and not clip.has_grammar_head:
            raise ValueError("the grammar reward needs a CLIP with a grammar head: set clip_load_path to a "
                             "grammar-CLIP file or retrieval checkpoint")
        self.terms, self.vocab, self.baseline = list(terms), dict(vocab), baseline
        self.cider, self.clip, self.remove_bad_endings = cider, clip, remove_bad_endings

    def scores(self, seq: Tensor, image_index: np.ndarray, gts: Sequence[np.ndarray],
               clip_vis_feats: Tensor | None = None) -> dict[str, Tensor]:
        """Raw per-row scores (R,) of every term (plus CLIP-S whenever the CLIP is used)."""
        names = {t.name for t in self.terms}
        device = seq.device
        out: dict[str, Tensor] = {}
        if "CIDEr" in names:
            out["CIDEr"] = torch.as_tensor(self.cider(seq, gts, image_index), dtype=torch.float32, device=device)
        if "Bleu_4" in names:
            out["Bleu_4"] = torch.as_tensor(bleu4_reward(seq, gts, image_index), dtype=torch.float32, device=device)
        if names & {"CLIP-S", "RefCLIP-S", "grammar"}:
            captions = decode_sequence(self.vocab, seq, remove_bad_endings=self.remove_bad_endings)
            pooled, emb = self.clip.encode(captions)
            if names & {"CLIP-S", "RefCLIP-S"}:
                if clip_vis_feats is None:
                    raise ValueError("the CLIP-S reward needs batch['clip_vis_feats'] (the CLIP-S image embeddings)")
                index = torch.as_tensor(image_index, device=clip_vis_feats.device)
                out["CLIP-S"] = self.clip.clip_s(clip_vis_feats[index], emb).to(device)
            if "RefCLIP-S" in names:
                refs = [decode_sequence(self.vocab, torch.as_tensor(np.asarray(g))) for g in gts]
                out["RefCLIP-S"] = self.clip.refclip_s(out["CLIP-S"].to(emb.device), emb,
                                                       [refs[m] for m in image_index.tolist()]).to(device)
            if "grammar" in names:
                out["grammar"] = self.clip.grammar(pooled).to(device)
        return out

    def __call__(self, sample_seq: Tensor, greedy_seq: Tensor | None, gts: Sequence[np.ndarray],
                 clip_vis_feats: Tensor | None = None) -> RewardOutput:
        """Advantages of ``sample_seq`` (B*K, L), rows grouped by image (i*K + k).

        ``greedy_seq`` (B, L) is required for the greedy baseline and ignored (may be None) for
        the leave-one-out one; the greedy captions are scored in the same call as the samples.
        ``stats``: ``reward`` (mean advantage), the samples' mean raw ``CIDEr``, ``Bleu_4``,
        ``CLIP-S``, ``RefCLIP-S`` (those computed; with the greedy baseline also the greedy captions'
        ``<name>_greedy``) and ``grammar_reward`` (the mean grammar term).
        """
        b = len(gts)
        if b == 0 or sample_seq.size(0) % b:
            raise ValueError(f"{sample_seq.size(0)} sampled rows do not split evenly over {b} images")
        k = sample_seq.size(0) // b
        sample_index = np.repeat(np.arange(b), k)
        if self.baseline == "greedy":
            if greedy_seq is None or greedy_seq.size(0) != b:
                raise ValueError(f"the greedy baseline needs greedy_seq with {b} rows")
            length = max(sample_seq.size(1), greedy_seq.size(1))
            seq = torch.cat([_pad(sample_seq, length), _pad(greedy_seq.to(sample_seq.device), length)])
            image_index = np.concatenate([sample_index, np.arange(b)])
        else:
            seq, image_index = sample_seq, sample_index
        scores = self.scores(seq, image_index, gts, clip_vis_feats)

        advantage = sample_seq.new_zeros(b, k, dtype=torch.float32)
        stats: dict[str, float] = {}
        for term in self.terms:
            own = scores[term.name][: b * k].view(b, k)
            if not term.baselined:
                base = torch.zeros_like(own)
            elif self.baseline == "greedy":
                base = greedy_baseline(scores[term.name][b * k:], k)
            else:
                base = leave_one_out_baseline(own)
            advantage += term.weight * (own - base)
            if term.name == "grammar":
                stats["grammar_reward"] = float((own - base).mean())
        for name in ("CIDEr", "Bleu_4", "CLIP-S", "RefCLIP-S"):
            if name in scores:
                stats[name] = float(scores[name][: b * k].mean())
                if self.baseline == "greedy":
                    stats[f"{name}_greedy"] = float(scores[name][b * k:].mean())
        stats["reward"] = float(advantage.mean())
        return RewardOutput(advantage.view(-1), stats)


def _pad(seq: Tensor, length: int) -> Tensor:
    return torch.nn.functional.pad(seq, (0, length - seq.size(1)))


def build_self_critical_reward(cfg: Config, vocab: Mapping[str, str],
                               clip: CLIPScorer | None = None) -> SelfCriticalReward:
    """The configured reward: the CIDEr-D df table is loaded only for a CIDEr-D term, the CLIP
    (``clip``, else loaded from :func:`reward_clip_source`) only for CLIP-S / grammar terms."""
    r = cfg.reward
    terms = reward_terms(r)
    names = {t.name for t in terms}
    cider = CiderReward(cider_df_path(cfg.data.cached_tokens), vocab) if "CIDEr" in names else None
    if clip is None and names & {"CLIP-S", "RefCLIP-S", "grammar"}:
        clip = load_scorer(reward_clip_source(r))
    return SelfCriticalReward(terms, vocab, r.sc_baseline, cider=cider, clip=clip,
                              remove_bad_endings=bool(cfg.decode.remove_bad_endings))
