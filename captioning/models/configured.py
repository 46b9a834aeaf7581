"""The captioner and its decoding as a :class:`captioning.config.Config` describes them (the one factory)."""
from __future__ import annotations

import torch
from torch import Tensor

from captioning.config import Config
from captioning.models.beam import beam_search
from captioning.models.decoding import DecodeOutput, sample
from captioning.models.text import bad_ending_ids
from captioning.models.transformer import TransformerCaptioner


def build_captioner(cfg: Config, vocab_size: int) -> TransformerCaptioner:
    """The captioner of the config's sizes for a vocabulary of ``vocab_size`` words."""
    if cfg.model.caption_model != "transformer":
        raise ValueError(f"caption_model {cfg.model.caption_model!r} is not supported; use 'transformer'")
    m = cfg.model
    return TransformerCaptioner(vocab_size=vocab_size, att_feat_size=m.att_feat_size, d_model=m.d_model, d_ff=m.d_ff,
                                n_enc=m.N_enc, n_dec=m.N_dec, num_heads=m.num_att_heads, dropout=m.dropout,
                                drop_prob_lm=m.drop_prob_lm, max_length=m.max_length)


@torch.no_grad()
def decode_configured(model: TransformerCaptioner, vocab: dict[str, str], cfg: Config, att_feats: Tensor,
                      att_masks: Tensor | None, full_logprobs: bool = False) -> DecodeOutput:
    """Decode with ``cfg.decode`` (beam size, sampling, ``suppress_UNK``, ``block_trigrams``,
    ``remove_bad_endings``, ...): the one decoding of validation, test, and ``tools/caption.py``."""
    d = cfg.decode
    words = list(vocab.values())
    unk_idx = len(words) if words and words[-1] == "UNK" else None
    common = dict(max_length=cfg.model.max_length, decoding_constraint=bool(d.decoding_constraint),
                  bad_ending_ids=bad_ending_ids(vocab) if d.remove_bad_endings else None,
                  block_trigrams=bool(d.block_trigrams), return_full_logprobs=full_logprobs)
    if d.beam_size > 1:
        return beam_search(model, att_feats, att_masks, beam_size=d.beam_size, group_size=d.group_size,
                           sample_n=d.sample_n if d.sample_n > 1 else 1, length_penalty=d.length_penalty,
                           temperature=d.temperature, unk_idx=unk_idx if d.suppress_UNK else None, **common)
    return sample(model, att_feats, att_masks, method=d.sample_method, temperature=d.temperature, **common)
