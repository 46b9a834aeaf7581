"""Caption data set and Lightning data module (docs/ORIGINAL.md §2).

One item is one image: its grid features (N tokens x C), ``seq_per_img`` caption rows (a
contiguous window at a random offset, as the original; draws with replacement when the image
has fewer captions), all its reference rows (``gts``, for rewards), and optionally its CLIP-S
image embedding.

Items are addressed as ``(index, epoch)`` by :class:`captioning.data.sampler.EpochSampler`; the
caption window is drawn from a stream of (seed, epoch, index), so the data of every epoch is a
function of the seed alone and a resumed run sees what an uninterrupted one would have.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from captioning.cli import InputError
from captioning.data.fingerprint import check_labels
from captioning.utils.io import read_json
from captioning.data.features import FeatureStore, open_features
from captioning.data.karpathy import splits_of
from captioning.data.sampler import EpochSampler, item_rng


class DatasetError(InputError):
    """The data files do not fit together."""


@dataclass(frozen=True)
class DataPaths:
    """The files of a caption data set (the ``data`` config keys)."""

    input_json: str
    input_label_h5: str | None
    input_att_dir: str
    input_clipscore_vis_dir: str | None = None


class CaptionDataset(Dataset):
    """Images of ``input_json`` with labels, grid features and optional CLIP-S embeddings."""

    def __init__(self, paths: DataPaths, seq_per_img: int = 5, use_clipscore: bool = False, train_only: bool = False,
                 seed: int = 1234, norm_att_feat: bool = False):
        info = read_json(paths.input_json)
        if not isinstance(info, dict) or "images" not in info:
            raise DatasetError(f"{paths.input_json}: no 'images' list (run scripts/prepro_labels.py)")
        self.paths = paths
        self.images: list[dict[str, Any]] = info["images"]
        self.ix_to_word: dict[str, str] = info.get("ix_to_word", {})
        self.seq_per_img = seq_per_img
        self.use_clipscore = use_clipscore
        self.seed, self.norm_att_feat = seed, norm_att_feat
        self.split_ix: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for ix, img in enumerate(self.images):
            for s in splits_of(img.get("split"), train_only):
                if s in self.split_ix:
                    self.split_ix[s].append(ix)
        self.att = open_features(paths.input_att_dir)
        self.clip_vis: FeatureStore | None = None
        if use_clipscore:
            if not paths.input_clipscore_vis_dir:
                raise DatasetError("use_clipscore is set but input_clipscore_vis_dir is empty")
            self.clip_vis = open_features(paths.input_clipscore_vis_dir)
        self._h5: h5py.File | None = None
        self.seq_length = 1
        if paths.input_label_h5:
            try:
                with h5py.File(self._label_path(), "r") as f:
                    self.seq_length = int(f["labels"].shape[1])
                    starts, ends = f["label_start_ix"][:], f["label_end_ix"][:]
                    check_labels(paths.input_json, self.ix_to_word, paths.input_label_h5, f.attrs, f["labels"][:])
            except (OSError, KeyError) as e:
                raise DatasetError(f"{paths.input_label_h5}: unreadable label file ({e}); write it again with "
                                   "scripts/prepro_labels.py") from None
            if len(starts) != len(self.images):
                raise DatasetError(f"{paths.input_label_h5} has {len(starts)} images but {paths.input_json} has "
                                   f"{len(self.images)}; were both written by the same prepro_labels run?")
            self.label_start = starts.astype(np.int64) - 1
            self.label_end = ends.astype(np.int64)

    @property
    def vocab_size(self) -> int:
        return len(self.ix_to_word)

    def _label_path(self) -> Path:
        p = Path(self.paths.input_label_h5)
        if not p.is_file():
            raise DatasetError(f"label file not found: {p}")
        return p

    def labels_h5(self) -> h5py.File:
        """The label file, opened once per process (DataLoader workers each open their own)."""
        if self._h5 is None:
            self._h5 = h5py.File(self._label_path(), "r")
        return self._h5

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None}

    def __len__(self) -> int:
        return len(self.images)

    def check_features(self, indices: list[int]) -> None:
        """Fail early, listing the images that have no features."""
        missing = [self.images[i]["id"] for i in indices if self.images[i]["id"] not in self.att]
        if missing:
            raise DatasetError(f"{len(missing)} image(s) have no features in {self.paths.input_att_dir}, "
                               f"e.g. ids {missing[:5]}; run the feature extraction for them")

    def check_feature_size(self, ix: int, expected: int) -> None:
        """Fail early when the features' width is not the model's ``att_feat_size``."""
        shape = np.shape(self.att[self.images[ix]["id"]])
        if shape[-1] != expected:
            raise DatasetError(f"features in {self.paths.input_att_dir} have shape {shape} (width {shape[-1]}) but "
                               f"the model expects att_feat_size {expected}; fix the config or re-extract them")

    def captions(self, ix: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(``seq_per_img`` rows, all rows) of image ``ix``, the window drawn from ``rng``."""
        if not self.paths.input_label_h5:
            return np.zeros((self.seq_per_img, self.seq_length), np.int64), np.zeros((0, self.seq_length), np.int64)
        start, end = int(self.label_start[ix]), int(self.label_end[ix])
        if end <= start:
            raise DatasetError(f"image {self.images[ix]['id']} has no captions in {self.paths.input_label_h5}")
        all_rows = self.labels_h5()["labels"][start:end].astype(np.int64)
        n = end - start
        if n < self.seq_per_img:
            picks = rng.integers(0, n, size=self.seq_per_img)
            return all_rows[picks], all_rows
        offset = int(rng.integers(0, n - self.seq_per_img + 1))
        return all_rows[offset : offset + self.seq_per_img], all_rows

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        """Item ``key``: ``(index, epoch)`` as the sampler yields, or an index (epoch 0)."""
        ix, epoch = key if isinstance(key, tuple) else (key, 0)
        img = self.images[ix]
        att = np.asarray(self.att[img["id"]], dtype=np.float32)
        if att.ndim == 3:
            att = att.reshape(-1, att.shape[-1])
        if att.ndim != 2:
            raise DatasetError(f"features of image {img['id']} have shape {att.shape}; expected (H, W, C) or (N, C)")
        if self.norm_att_feat:  # the original's norm_att_feat: each visual token L2-normalised
            att = att / np.linalg.norm(att, 2, 1, keepdims=True)
        seq, gts = self.captions(ix, item_rng(self.seed, epoch, ix))
        item = {"att_feats": att, "seq": seq, "gts": gts,
                "info": {"ix": ix, "id": img["id"], "file_path": img.get("file_path")}}
        if self.clip_vis is not None:
            item["clip_vis_feats"] = np.asarray(self.clip_vis[img["id"]], dtype=np.float32).reshape(-1)
        return item


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items as the original's ``collate_func`` (docs/ORIGINAL.md §2)."""
    b = len(batch)
    lengths = [x["att_feats"].shape[0] for x in batch]
    dim = batch[0]["att_feats"].shape[1]
    att = torch.zeros(b, max(lengths), dim)
    for i, x in enumerate(batch):
        att[i, : lengths[i]] = torch.as_tensor(x["att_feats"])
    att_masks = None
    if len(set(lengths)) > 1:
        att_masks = torch.zeros(b, max(lengths))
        for i, n in enumerate(lengths):
            att_masks[i, :n] = 1
    seq = np.stack([x["seq"] for x in batch])  # (B, S, L)
    labels = torch.zeros(b, seq.shape[1], seq.shape[2] + 2, dtype=torch.long)
    labels[:, :, 1:-1] = torch.from_numpy(seq)
    nonzero = (labels != 0).sum(-1)
    masks = (torch.arange(labels.shape[-1]) < (nonzero + 2)[..., None]).float()
    out = {
        "fc_feats": torch.zeros(b, 0),
        "att_feats": att,
        "att_masks": att_masks,
        "labels": labels,
        "masks": masks,
        "gts": [x["gts"] for x in batch],
        "infos": [x["info"] for x in batch],
    }
    if "clip_vis_feats" in batch[0]:
        out["clip_vis_feats"] = torch.from_numpy(np.stack([x["clip_vis_feats"] for x in batch]))
    return out


class CaptionDataModule(pl.LightningDataModule):
    """Train (train + restval), val and test loaders over one :class:`CaptionDataset`.

    ``batch_size`` is global, as in the original: each of the ``world_size`` processes loads
    ``batch_size / world_size`` images per step. Every loader uses an :class:`EpochSampler`
    (the trainer runs with ``use_distributed_sampler=False``); :meth:`resume` positions the
    training sampler of a run restored from a checkpoint.
    """

    def __init__(self, paths: DataPaths, batch_size: int, seq_per_img: int = 5, use_clipscore: bool = False,
                 num_workers: int = 4, train_only: bool = False, eval_batch_size: int | None = None,
                 att_feat_size: int | None = None, seed: int = 1234, norm_att_feat: bool = False):
        super().__init__()
        self.att_feat_size = att_feat_size
        self.paths, self.batch_size, self.seq_per_img = paths, batch_size, seq_per_img
        self.use_clipscore, self.num_workers, self.train_only = use_clipscore, num_workers, train_only
        self.eval_batch_size = eval_batch_size
        self.seed, self.norm_att_feat = seed, norm_att_feat
        self.dataset: CaptionDataset | None = None
        self._resume_at: tuple[int, int] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            self.dataset = CaptionDataset(self.paths, self.seq_per_img, self.use_clipscore, self.train_only,
                                          seed=self.seed, norm_att_feat=self.norm_att_feat)

    def resume(self, epoch: int, batches_done: int) -> None:
        """The training loader starts at batch ``batches_done`` of ``epoch`` (a restored run)."""
        self._resume_at = (epoch, batches_done)

    def _per_process(self, batch_size: int) -> int:
        world = self.trainer.world_size if self.trainer is not None else 1
        if batch_size % world:
            raise DatasetError(f"batch_size {batch_size} is global and must be divisible by the {world} processes")
        return batch_size // world

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        self.setup()
        indices = self.dataset.split_ix[split]
        if not indices:
            raise DatasetError(f"split {split!r} of {self.paths.input_json} is empty")
        self.dataset.check_features(indices)
        if self.att_feat_size is not None:
            self.dataset.check_feature_size(indices[0], self.att_feat_size)
        per_process = self._per_process(batch_size)
        trainer = self.trainer
        sampler = EpochSampler(indices, self.seed, shuffle, rank=trainer.global_rank if trainer else 0,
                               world=trainer.world_size if trainer else 1)
        if shuffle and self._resume_at is not None:
            epoch, batches_done = self._resume_at
            sampler.resume(epoch, min(batches_done * per_process, len(sampler)))
            self._resume_at = None
        # its own generator: creating the loader's iterator leaves torch's global stream alone
        return DataLoader(self.dataset, batch_size=per_process, sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed),
                          num_workers=self.num_workers, collate_fn=collate, drop_last=False,
                          persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size or self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size or self.batch_size)


def data_paths_from_config(cfg: Any) -> DataPaths:
    """The :class:`DataPaths` of a :class:`captioning.config.Config`."""
    d = cfg.data
    return DataPaths(d.input_json, d.input_label_h5, d.input_att_dir,
                     d.input_clipscore_vis_dir if cfg.reward.use_clipscore else None)

