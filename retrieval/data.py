"""Data of ``retrieval/train_pl.py``: Karpathy captions with image embeddings (grammar fine-tuning,
docs/ORIGINAL.md §6.1) and FineShapes images with full descriptions (pretraining a CLIP from scratch).

Items are addressed as ``(index, epoch)`` by :class:`captioning.data.sampler.EpochSampler`.
Training items draw fresh randomness every epoch from a stream of (seed, epoch, index), so a
resumed run sees the data an uninterrupted one would have; validation and test items are fixed,
drawn from a stream seeded by (seed, index).
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

import clip
from captioning.data.karpathy import image_id, split_images
from captioning.data.sampler import EpochSampler, item_rng
from captioning.fineshapes import Scene
from captioning.metrics.clipscore import PROMPT
from clip.images import open_rgb
from clip.transforms import CLIP_MEAN, CLIP_STD, center_crop, resize_shorter_side
from retrieval.details import description_and_twin, details_of, mirror
from retrieval.perturb import perturb


@dataclass(frozen=True)
class Entry:
    """One image of a Karpathy split file."""

    image_id: int
    path: str  # relative to the images root: <filepath>/<filename>
    captions: tuple[tuple[str, ...], ...]  # the Karpathy tokens of each reference


def read_karpathy(path: str | Path, split: str) -> list[Entry]:
    """The images of a split (``train`` = Karpathy train + restval, as the original's karpathy_train)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"Karpathy split file not found: {path} (config key input_dataset_json)")
    return [Entry(int(image_id(im)), f"{im['filepath']}/{im['filename']}",
                  tuple(tuple(s["tokens"]) for s in im["sentences"] if s["tokens"]))
            for im in split_images(path, split)]


def load_images(root: str | Path, paths: Sequence[str], size: int) -> Tensor:
    """(N, 3, size, size) uint8 images, resized and centre-cropped as CLIP's preprocessing does."""
    out = torch.empty(len(paths), 3, size, size, dtype=torch.uint8)
    for k, p in enumerate(paths):
        pixels = np.array(center_crop(resize_shorter_side(open_rgb(Path(root) / p), size), size))
        out[k] = torch.from_numpy(pixels).permute(2, 0, 1)
    return out


def normalize(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) -> float32 CLIP-normalised, identical to ``clip.transforms`` on the same pixels."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class _Stream:
    """Per-item randomness: (seed, epoch, index) in training, (seed, index) in evaluation."""

    def __init__(self, seed: int, train: bool):
        self.seed, self.train = seed, train

    def item_py(self, index: int, epoch: int) -> random.Random:
        if self.train:
            return random.Random(int(item_rng(self.seed, epoch, index).integers(2**63)))
        return random.Random(self.seed * 1_000_003 + index)

    def item_np(self, index: int, epoch: int) -> np.random.Generator:
        return item_rng(self.seed, epoch, index) if self.train else np.random.default_rng([self.seed, index])


def _key(key: int | tuple[int, int]) -> tuple[int, int]:
    """``(index, epoch)`` of a sampler key (a bare index means epoch 0)."""
    return key if isinstance(key, tuple) else (key, 0)


class GrammarDataset(Dataset):
    """One item per image: its embedding, one random reference and a perturbed negative of it."""

    def __init__(self, entries: Sequence[Entry], features: Mapping[str, Any], vocab: Sequence[str],
                 seed: int, train: bool, use_prompt: bool = False):
        missing = [e.image_id for e in entries if str(e.image_id) not in features]
        if missing:
            raise KeyError(f"no image embedding for {len(missing)} image(s), e.g. {missing[0]}")
        empty = [e.image_id for e in entries if not e.captions]
        if empty:
            raise ValueError(f"{len(empty)} image(s) have no non-empty caption, e.g. {empty[0]}")
        self.entries, self.features, self.vocab = list(entries), features, list(vocab)
        self.prefix = f"{PROMPT} " if use_prompt else ""
        self.stream = _Stream(seed, train)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = _key(key)
        entry = self.entries[index]
        rng = self.stream.item_py(index, epoch)
        tokens = rng.choice(entry.captions)
        negative, kind = perturb(tokens, self.vocab, rng)
        feat = torch.as_tensor(np.asarray(self.features[str(entry.image_id)], dtype=np.float32)).flatten()
        return {"image_id": entry.image_id, "image": feat, "text": self.prefix + " ".join(tokens),
                "neg_text": self.prefix + " ".join(negative), "kind": kind}


class PretrainDataset(Dataset):
    """FineShapes images with a freshly phrased full description and its one-detail-wrong twin
    (the detail drawn uniformly, or a relation with probability ``relation_twin_prob``), and with
    ``paraphrase`` a second phrasing of the same truth.

    Training augmentation keeps the truth: a horizontal flip mirrors the scene too (left and right
    swap in the caption), and a shift of up to ``shift`` pixels (edges replicated) moves no object
    across another.
    """

    def __init__(self, images: Tensor, scenes: Sequence[Scene], seed: int, train: bool, hflip: bool = False,
                 shift: int = 0, prompt_prob: float = 0.0, relation_twin_prob: float = 0.0, paraphrase: bool = False):
        if len(images) != len(scenes):
            raise ValueError(f"{len(images)} images for {len(scenes)} scenes")
        self.images, self.scenes = images, list(scenes)
        self.hflip, self.shift, self.prompt_prob = hflip and train, shift if train else 0, prompt_prob
        self.relation_twin_prob, self.paraphrase = relation_twin_prob, paraphrase
        self.stream = _Stream(seed, train)

    def _prompted(self, texts: tuple[str, ...], rng: np.random.Generator) -> tuple[str, ...]:
        return tuple(f"{PROMPT} {t}" for t in texts) if rng.random() < self.prompt_prob else texts

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = _key(key)
        rng = self.stream.item_np(index, epoch)
        image, scene = self.images[index], self.scenes[index]
        if self.hflip and rng.random() < 0.5:
            image, scene = image.flip(-1), mirror(scene)
        if self.shift:
            s, size = self.shift, image.shape[-1]
            padded = F.pad(image[None].float(), (s, s, s, s), mode="replicate")[0]
            dx, dy = rng.integers(0, 2 * s + 1, size=2)
            image = padded[:, dy:dy + size, dx:dx + size].round().to(torch.uint8)
        options = details_of(scene)
        detail = options[int(rng.integers(len(options)))]
        if "relation" in options and rng.random() < self.relation_twin_prob:
            detail = "relation"
        text, twin = self._prompted(description_and_twin(scene, detail, rng), rng)
        item = {"image_id": index, "image": image, "text": text, "neg_text": twin}
        if self.paraphrase:
            item["para_text"] = self._prompted((description_and_twin(scene, detail, rng)[0],), rng)[0]
        return item


@dataclass(frozen=True)
class Collate:
    """Stack images (uint8 images are CLIP-normalised) and tokenise texts at the model's context length."""

    context_length: int

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, Any]:
        images = torch.stack([b["image"] for b in batch])
        out = {"image": normalize(images) if images.dtype == torch.uint8 else images,
               "image_id": [b["image_id"] for b in batch]}
        for key in ("text", "neg_text", "para_text"):
            if key in batch[0]:
                out[key] = clip.tokenize([b[key] for b in batch], context_length=self.context_length, truncate=True)
        if "kind" in batch[0]:
            out["kind"] = [b["kind"] for b in batch]
        return out


class RetrievalDataModule(pl.LightningDataModule):
    """Loaders over prepared datasets; ``batch_size`` is global (divided by the number of processes).
    Every loader uses an :class:`EpochSampler` (the trainer runs with ``use_distributed_sampler=False``)."""

    def __init__(self, datasets: Mapping[str, Dataset], batch_size: int, eval_batch_size: int,
                 context_length: int, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.datasets, self.batch_size, self.eval_batch_size = dict(datasets), batch_size, eval_batch_size
        self.collate, self.num_workers, self.seed = Collate(context_length), num_workers, seed
        self._resume_at: tuple[int, int] | None = None

    def resume(self, epoch: int, batches_done: int) -> None:
        """The training loader starts at batch ``batches_done`` of ``epoch`` (a restored run)."""
        self._resume_at = (epoch, batches_done)

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise KeyError(f"no {split!r} data was prepared")
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is global and must be divisible by the {world} processes")
        per_process = batch_size // world
        dataset = self.datasets[split]
        sampler = EpochSampler(range(len(dataset)), self.seed, shuffle=train, rank=rank, world=world)
        if train and self._resume_at is not None:
            epoch, batches_done = self._resume_at
            sampler.resume(epoch, min(batches_done * per_process, len(sampler)))
            self._resume_at = None
        return DataLoader(dataset, batch_size=per_process, sampler=sampler,
                          generator=torch.Generator().manual_seed(self.seed), num_workers=self.num_workers,
                          collate_fn=self.collate, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, False)
