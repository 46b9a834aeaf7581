"""Per-image feature stores: the original's one-file-per-image folders, and one packed file.

* Folder (the original's format): ``<dir>/<id>.npz`` with key ``feat`` (the original's older
  loader also accepted ``z``) or ``<dir>/<id>.npy``.
* Packed: ``<name>.npy`` holding all features stacked along the first axis, opened as a
  memory map, plus ``<name>.json`` with ``{"ids": [...], ...manifest}``; row ``k`` belongs to
  ``ids[k]``. One file, no decompression, no per-item open: much faster to read.

:func:`open_features` picks the reader from the path. Readers open files lazily, so a store
can be created in the main process and used in DataLoader workers.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from captioning.utils.io import atomic_path, write_json


class FeatureError(KeyError):
    """A feature is missing or malformed."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class FeatureStore(Protocol):
    def __getitem__(self, image_id: Any) -> np.ndarray: ...

    def __contains__(self, image_id: Any) -> bool: ...


class FolderFeatures:
    """One ``<id>.npz`` (key ``feat``) or ``<id>.npy`` file per image."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FeatureError(f"feature folder not found: {self.root}")

    def _path(self, image_id: Any) -> Path | None:
        for ext in (".npz", ".npy"):
            p = self.root / f"{image_id}{ext}"
            if p.is_file():
                return p
        return None

    def __contains__(self, image_id: Any) -> bool:
        return self._path(image_id) is not None

    def __getitem__(self, image_id: Any) -> np.ndarray:
        path = self._path(image_id)
        if path is None:
            raise FeatureError(f"no features for image {image_id}: neither {self.root}/{image_id}.npz nor .npy exists")
        try:
            if path.suffix == ".npy":
                return np.load(path)
            with np.load(path) as z:
                key = "feat" if "feat" in z.files else "z" if "z" in z.files else None
                if key is None:
                    raise FeatureError(f"{path}: expected key 'feat' in the .npz, found {z.files}")
                return z[key]
        except (OSError, ValueError, EOFError) as e:
            raise FeatureError(f"{path}: unreadable feature file ({e})") from None


class PackedFeatures:
    """All features in one ``.npy`` memory map with an id index in the sidecar ``.json``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.index_path = self.path.with_suffix(".json")
        for p in (self.path, self.index_path):
            if not p.is_file():
                raise FeatureError(f"packed feature file not found: {p}")
        with open(self.index_path, encoding="utf-8") as f:
            self.manifest = json.load(f)
        self.row = {str(i): k for k, i in enumerate(self.manifest["ids"])}
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
            if len(self._array) != len(self.row):
                raise FeatureError(f"{self.path}: {len(self._array)} rows but {len(self.row)} ids in {self.index_path}")
        return self._array

    def __contains__(self, image_id: Any) -> bool:
        return str(image_id) in self.row

    def __getitem__(self, image_id: Any) -> np.ndarray:
        try:
            k = self.row[str(image_id)]
        except KeyError:
            raise FeatureError(f"no features for image {image_id} in {self.path}") from None
        return np.array(self.array[k])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # workers re-open the memory map


def write_packed(path: str | os.PathLike, ids: list[Any], features: np.ndarray, **manifest: Any) -> None:
    """Write a packed store atomically: ``features[k]`` belongs to ``ids[k]``."""
    if len(ids) != len(features):
        raise ValueError(f"{len(ids)} ids for {len(features)} feature rows")
    if len(set(map(str, ids))) != len(ids):
        raise ValueError("duplicate ids in a packed feature store")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(features))
    info = {"ids": list(ids), "shape": list(features.shape), "dtype": str(features.dtype), **manifest}
    write_json(path.with_suffix(".json"), info)


def open_features(path: str | os.PathLike) -> FeatureStore:
    """A folder store for a directory, a packed store for a ``.npy`` file."""
    p = Path(path)
    if p.suffix == ".npy":
        return PackedFeatures(p)
    if p.is_dir():
        return FolderFeatures(p)
    raise FeatureError(f"feature path {p} is neither a folder of per-image files nor a packed .npy file")
