"""Caption every image of a split with a checkpoint (``tools/finecapeval_inference.py``)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from captioning.checkpoints import checkpoint_vocab
from captioning.config import Config
from captioning.data.dataset import CaptionDataset, DataPaths, collate
from captioning.data.prepro import read_vocab
from captioning.models import decode_sequence
from captioning.training.module import CaptionerModule, load_weights


@torch.inference_mode()
def caption_split(cfg: Config, ckpt_path: str | os.PathLike, split: str = "test", batch_size: int = 40) -> dict[str, str]:
    """``{image id: caption}`` for the ``split`` images of ``cfg.data.input_json`` (no labels needed).

    The vocabulary comes from the checkpoint, so the JSON needs no ``ix_to_word`` (the original
    required one of exactly the training vocabulary's size).
    """
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    vocab = checkpoint_vocab(ckpt_path) or read_vocab(cfg.data.input_json)
    module = CaptionerModule(cfg.to_flat_dict(), vocab)
    load_weights(module, ckpt_path)
    module.eval()
    dataset = CaptionDataset(DataPaths(cfg.data.input_json, None, cfg.data.input_att_dir), seq_per_img=1)
    indices = dataset.split_ix[split]
    if not indices:
        raise ValueError(f"no {split!r} images in {cfg.data.input_json}")
    dataset.check_features(indices)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, collate_fn=collate, num_workers=0)
    out: dict[str, str] = {}
    for batch in tqdm(loader, desc=f"captioning {split}", unit="batch"):
        seq = module.decode(batch["att_feats"], batch["att_masks"]).seq
        captions = decode_sequence(vocab, seq, remove_bad_endings=bool(cfg.decode.remove_bad_endings))
        out.update({str(info["id"]): c for info, c in zip(batch["infos"], captions)})
    return out
