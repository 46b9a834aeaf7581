"""The Karpathy split file (``dataset_coco.json`` layout): one reader, one image-id rule, one split rule.

* Image id: ``cocoid``, else ``imgid`` (the original names features and results by ``cocoid``;
  its label script falls back to ``imgid``). An entry with neither is an error naming it.
* Splits: ``train`` takes ``train`` and ``restval`` (unless ``train_only``), ``val`` and ``test``
  take their own; an entry without ``split`` belongs to every split (as the original's loader).
"""
from __future__ import annotations

import os
from typing import Any

from captioning.cli import InputError
from captioning.utils.io import read_json

SPLITS = ("train", "val", "test")


def image_id(img: dict[str, Any]) -> int:
    """The image id of a Karpathy entry: ``cocoid``, else ``imgid``."""
    if "cocoid" in img:
        return img["cocoid"]
    if "imgid" in img:
        return img["imgid"]
    raise InputError(f"image entry {img.get('filename', img.get('file_path', '?'))!r} has neither 'cocoid' nor 'imgid'")


def splits_of(entry_split: str | None, train_only: bool = False) -> set[str]:
    """The loader splits an entry belongs to (see the module docstring)."""
    if entry_split is None:
        return set(SPLITS)
    if entry_split == "restval":
        return set() if train_only else {"train"}
    return {entry_split}


def read_images(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The ``images`` list of a Karpathy-layout (or prepro_labels / FineCapEval) JSON file."""
    info = read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise InputError(f"{path}: expected a top-level 'images' list")
    return info["images"]


def split_images(path: str | os.PathLike, split: str, train_only: bool = False) -> list[dict[str, Any]]:
    """The entries of ``split``; an empty split is an error."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    images = [im for im in read_images(path) if split in splits_of(im.get("split"), train_only)]
    if not images:
        raise InputError(f"{path}: no images in split {split!r}")
    return images
