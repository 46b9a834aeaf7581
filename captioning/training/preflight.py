"""Checks of a training or evaluation run's inputs before any data or model is loaded, so that a
missing or mismatched file costs seconds, not an epoch."""
from __future__ import annotations

from pathlib import Path

from captioning.cli import InputError
from captioning.config import Config
from captioning.data.fingerprint import check_df
from captioning.rewards.cider_reward import cider_df_path
from captioning.rewards.self_critical import reward_terms
from captioning.utils.io import read_json
from cider.df_file import read_df_file


def _exists(path: str | None, key: str, what: str) -> None:
    if path and not Path(path).exists():
        raise InputError(f"{what} not found: {path} (config key {key}); fix the path or create it first")


def check_inputs(cfg: Config, evaluate: bool = False) -> None:
    """Every input file the run will read exists; the CIDEr-D df pickle fits the vocabulary."""
    d = cfg.data
    _exists(d.input_json, "input_json", "image list and vocabulary")
    _exists(d.input_label_h5, "input_label_h5", "label file")
    _exists(d.input_att_dir, "input_att_dir", "grid features")
    if cfg.train.language_eval:
        _exists(d.input_ref_json, "input_ref_json", "reference captions")
    if cfg.reward.use_clipscore or cfg.train.eval_clipscore:
        _exists(d.input_clipscore_vis_dir, "input_clipscore_vis_dir", "CLIP-S image embeddings")
    try:
        terms = {t.name for t in reward_terms(cfg.reward)}
    except ValueError as e:
        raise InputError(str(e)) from None
    if not evaluate and cfg.reward.self_critical_after >= 0 and "CIDEr" in terms:
        path = cider_df_path(d.cached_tokens)
        info = read_json(d.input_json)
        vocab = info.get("ix_to_word") if isinstance(info, dict) else None
        check_df(str(path), read_df_file(path), vocab)
