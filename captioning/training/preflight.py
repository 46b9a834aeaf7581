"""Checks of a training or evaluation run's inputs before any data or model is loaded, so that a
missing or mismatched file costs seconds, not an epoch."""
from __future__ import annotations

from pathlib import Path

import h5py

from captioning.checkpoints import check_checkpoint_vocab, read_captioner_checkpoint
from captioning.cli import InputError
from captioning.config import Config
from captioning.data.features import PackedFeatures, open_features
from captioning.data.fingerprint import check_df, check_labels
from captioning.rewards.cider_reward import cider_df_path
from captioning.rewards.self_critical import reward_terms
from captioning.utils.io import read_json
from cider.df_file import read_df_file


def _exists(path: str | None, key: str, what: str) -> None:
    if path and not Path(path).exists():
        raise InputError(f"{what} not found: {path} (config key {key}); fix the path or create it first")


def check_inputs(cfg: Config, evaluate: bool = False, default_checkpoint: str | Path | None = None) -> None:
    """Every input file the run will read exists and is readable; the checkpoint to load, the labels
    and the CIDEr-D df pickle fit the vocabulary. ``default_checkpoint``: what ``--evaluate``
    loads without --init_from / --resume."""
    d = cfg.data
    _exists(d.input_json, "input_json", "image list and vocabulary")
    _exists(d.input_label_h5, "input_label_h5", "label file")
    _exists(d.input_att_dir, "input_att_dir", "grid features")
    att = open_features(d.input_att_dir)
    if isinstance(att, PackedFeatures) and len(att.array) == 0:  # maps the file: a truncated one fails here
        raise InputError(f"{d.input_att_dir} holds no features (config key input_att_dir)")
    check_feature_source(d.input_att_dir, _manifest(att), d.feature_clip_model, d.feature_resolution)
    resume = cfg.train.resume if cfg.train.resume != "auto" else None
    if cfg.train.start_from:
        resume = str(Path(cfg.train.start_from) / f"{cfg.train.id}-last.ckpt")
    elif cfg.train.resume == "auto" and default_checkpoint is not None:
        resume = str(default_checkpoint)
    loaded = [cfg.train.init_from or resume or default_checkpoint] if evaluate else [cfg.train.init_from, resume]
    for path in loaded:
        if path and Path(path).is_file():  # a truncated or corrupt checkpoint fails now, with its name
            check_checkpoint_vocab(path, read_captioner_checkpoint(path)[1], _vocab(d.input_json))
    if cfg.train.language_eval:
        _exists(d.input_ref_json, "input_ref_json", "reference captions")
    if cfg.reward.use_clipscore or cfg.train.eval_clipscore:
        _exists(d.input_clipscore_vis_dir, "input_clipscore_vis_dir", "CLIP-S image embeddings")
    if d.input_label_h5:
        ix_to_word = _vocab(d.input_json)
        try:
            with h5py.File(d.input_label_h5, "r") as f:
                check_labels(d.input_json, ix_to_word, d.input_label_h5, f.attrs, f["labels"][:])
        except (OSError, KeyError) as e:
            raise InputError(f"{d.input_label_h5}: unreadable label file ({e}); write it again with "
                             "scripts/prepro_labels.py") from None
    try:
        terms = {t.name for t in reward_terms(cfg.reward)}
    except ValueError as e:
        raise InputError(str(e)) from None
    if not evaluate and cfg.reward.self_critical_after >= 0 and "CIDEr" in terms:
        path = cider_df_path(d.cached_tokens)
        check_df(str(path), read_df_file(path), _vocab(d.input_json))


def _manifest(store: object) -> dict:
    """The extraction manifest of a feature store (empty when it has none, e.g. the original's folders)."""
    if isinstance(store, PackedFeatures):
        return store.manifest
    root = getattr(store, "root", None)
    path = Path(root) / "manifest.json" if root is not None else None
    return read_json(path) if path is not None and path.is_file() else {}


def check_feature_source(where: str, manifest: dict, clip_model: str, resolution: int) -> None:
    """The features were made by the configured CLIP at the configured resolution (``feature_clip_model``,
    ``feature_resolution``: what ``tools/caption.py`` uses for new images). Stores without a record pass."""
    made = manifest.get("config") or {}
    if made.get("resolution") not in (None, resolution):
        raise InputError(f"{where} was extracted at {made['resolution']} px but feature_resolution is {resolution}; "
                         "fix the config or re-extract the features")
    model = manifest.get("model")
    if model is None or model == clip_model:
        return
    same_file = Path(model).is_file() and Path(clip_model).is_file() and Path(model).samefile(clip_model)
    if not same_file:
        raise InputError(f"{where} was extracted with CLIP {model!r} but feature_clip_model is {clip_model!r}; "
                         "fix the config or re-extract the features")


def _vocab(input_json: str) -> dict[str, str]:
    info = read_json(input_json)
    vocab = info.get("ix_to_word") if isinstance(info, dict) else None
    if not isinstance(vocab, dict) or not vocab:
        raise InputError(f"{input_json} has no ix_to_word vocabulary; give the JSON of scripts/prepro_labels.py")
    return vocab
