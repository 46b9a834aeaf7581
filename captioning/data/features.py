"""Per-image feature stores: the original's one-file-per-image folders, and one packed file.

* Folder (the original's format): ``<dir>/<id>.npz`` with key ``feat`` (the original's older
  loader also accepted ``z``) or ``<dir>/<id>.npy``.
* Packed: ``<name>.npy`` holding all features stacked along the first axis, opened as a
  memory map, plus ``<name>.json`` with ``{"ids": [...], ...manifest}``; row ``k`` belongs to
  ``ids[k]``. One file, no decompression, no per-item open: much faster to read.

:func:`open_features` picks the reader from the path. Readers open files lazily, so a store
can be created in the main process and used in DataLoader workers.

Writers (used by feature extraction) are resumable: :class:`FolderWriter` writes each file
atomically, so an existing file is a finished one; :class:`PackedWriter` collects rows in
atomically written part files and packs them at the end. :func:`merge_packed` joins packed
stores written by separate shards.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from captioning.cli import InputError
from captioning.utils.io import atomic_path, read_json, write_json


class FeatureError(InputError, KeyError):
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
        self.manifest = read_json(self.index_path)
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("ids"), list):
            raise FeatureError(f"{self.index_path}: no 'ids' list; is it the index of a packed feature store?")
        self.row = {str(i): k for k, i in enumerate(self.manifest["ids"])}
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            try:
                self._array = np.load(self.path, mmap_mode="r")
            except (ValueError, EOFError) as e:
                raise FeatureError(f"{self.path}: unreadable packed feature file ({e}); is it truncated? Extract or "
                                   "pack it again") from None
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


class FeatureWriter(Protocol):
    """Where extraction puts features. ``done`` holds the (string) ids already stored."""

    done: set[str]

    def add(self, ids: Sequence[Any], rows: np.ndarray, positions: Sequence[int]) -> None: ...

    def flush(self) -> None: ...

    def finish(self, **manifest: Any) -> None: ...


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), for comparing configs."""
    return json.loads(json.dumps(obj))


def _check_config(found: Any, expected: dict, where: Path) -> None:
    if found is not None and found != expected:
        raise FeatureError(f"{where} was written with another configuration {found}, not {expected}; "
                           "use the same options, another output path, or delete it")


class FolderWriter:
    """One file per image: ``<root>/<id>.npz`` (key ``feat``, compressed, as the original) or
    ``<root>/<id>.npy``. Each file is written atomically, so an existing file is a finished one.

    ``config`` (the options that shape the features) is stored in the manifest
    ``<root>/<manifest_name>``; continuing a folder whose manifests hold another config is an error.
    Files are written by ``threads`` threads (zlib releases the GIL).
    """

    def __init__(self, root: str | os.PathLike, ext: str = ".npz", config: dict | None = None,
                 manifest_name: str = "manifest.json", threads: int = 4):
        if ext not in (".npz", ".npy"):
            raise ValueError(f"ext must be '.npz' or '.npy', got {ext!r}")
        self.root, self.ext, self.config = Path(root), ext, _jsonable(config or {})
        self.manifest_path = self.root / manifest_name
        self.root.mkdir(parents=True, exist_ok=True)
        for m in sorted(self.root.glob("manifest*.json")):
            _check_config(json.loads(m.read_text(encoding="utf-8")).get("config"), self.config, m)
        self.done: set[str] = set()
        self._stale: dict[str, list[Path]] = {}  # temporary files of killed runs, by id
        for e in os.scandir(self.root):
            if e.name.endswith(ext) and not e.name.startswith("."):
                self.done.add(e.name[: -len(ext)])
            elif e.name.startswith(".") and e.name.endswith(".tmp"):  # atomic_path's ".<name>.<random>.tmp"
                name = e.name[1:].rsplit(".", 2)[0]
                if name.endswith(ext):
                    self._stale.setdefault(name[: -len(ext)], []).append(Path(e.path))
        for image_id in self.done & set(self._stale):
            self._remove_stale(image_id)
        self.threads = threads
        self._row: tuple[list[int], str] | None = None

    def _remove_stale(self, image_id: str) -> None:
        """Delete the temporary files a killed run left for this id. Only ids this writer owns
        are touched, so shards sharing the folder never remove each other's files in flight."""
        for p in self._stale.pop(image_id, []):
            p.unlink(missing_ok=True)

    def _write(self, image_id: Any, row: np.ndarray) -> None:
        with atomic_path(self.root / f"{image_id}{self.ext}") as tmp:
            with open(tmp, "wb") as f:
                if self.ext == ".npz":
                    np.savez_compressed(f, feat=row)
                else:
                    np.save(f, row)
        self._remove_stale(str(image_id))

    def add(self, ids: Sequence[Any], rows: np.ndarray, positions: Sequence[int] = ()) -> None:
        """Write ``rows[k]`` as the file of ``ids[k]`` (positions are not needed here)."""
        if len(ids) != len(rows):
            raise ValueError(f"{len(ids)} ids for {len(rows)} feature rows")
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(self._write, ids, rows))
        self.done.update(map(str, ids))
        self._row = (list(rows.shape[1:]), str(rows.dtype))

    def flush(self) -> None:
        """Nothing to do: every file is on disk when ``add`` returns."""

    def finish(self, **manifest: Any) -> None:
        """Write the manifest: the config, ``count`` (files in the folder), the feature shape and
        dtype, and ``manifest``."""
        info = json.loads(self.manifest_path.read_text(encoding="utf-8")) if self.manifest_path.is_file() else {}
        if self._row is not None:
            info.update(shape=self._row[0], dtype=self._row[1])
        info.update(count=len(self.done), config=self.config, **manifest)
        write_json(self.manifest_path, info, indent=1)


class PackedWriter:
    """Builds the packed store ``<path>`` (+ ``.json``) incrementally and resumably.

    Rows are buffered and flushed to ``<path>.parts/part-<k>.npy`` with an index
    ``part-<k>.json`` (ids and positions), each written atomically, the index last; a part
    without its index is discarded. A new writer on the same path continues where a killed
    one stopped: ``done`` holds the ids of the finished parts and of an existing store.
    :meth:`finish` packs the store and the parts (rows ordered by position, i.e. by their
    place in the input list) into ``<path>`` and removes the parts.
    """

    def __init__(self, path: str | os.PathLike, config: dict | None = None, part_bytes: int = 64 << 20):
        self.path, self.config, self.part_bytes = Path(path), _jsonable(config or {}), part_bytes
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.store: PackedFeatures | None = None
        if self.path.exists():
            self.store = PackedFeatures(self.path)
            rows = len(np.load(self.path, mmap_mode="r"))
            if rows != len(self.store.row):
                raise FeatureError(f"{self.path} has {rows} rows but its index {self.store.index_path} lists "
                                   f"{len(self.store.row)} ids (was a run killed while packing?); delete both "
                                   f"files and run again (finished parts in {self.parts} are kept)")
            _check_config(self.store.manifest.get("config"), self.config, self.path)
        self.done: set[str] = set(self.store.row) if self.store else set()
        self._part_index: list[Path] = []
        if self.parts.is_dir():
            config = self.parts / "config.json"  # absent only if a run was killed before its first part
            _check_config(json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None,
                          self.config, self.parts)
            for p in self.parts.iterdir():
                if p.suffix == ".tmp" or (p.suffix == ".npy" and not p.with_suffix(".json").is_file()):
                    p.unlink()  # left by a killed run
            self._part_index = sorted(self.parts.glob("part-*.json"))
            for p in self._part_index:
                self.done.update(map(str, json.loads(p.read_text(encoding="utf-8"))["ids"]))
        self._buffer: list[tuple[list, list[int], np.ndarray]] = []
        self._row = self._existing_row()

    def _existing_row(self) -> tuple[tuple[int, ...], np.dtype] | None:
        arrays = ([self.store.array] if self.store else []) + [np.load(p.with_suffix(".npy"), mmap_mode="r")
                                                              for p in self._part_index[:1]]
        return (arrays[0].shape[1:], arrays[0].dtype) if arrays else None

    def add(self, ids: Sequence[Any], rows: np.ndarray, positions: Sequence[int]) -> None:
        """Buffer rows (``rows[k]`` for ``ids[k]``, input position ``positions[k]``); flush a part when full."""
        if not len(ids) == len(rows) == len(positions):
            raise ValueError(f"{len(ids)} ids, {len(rows)} rows and {len(positions)} positions")
        if self._row is None:
            self._row = (rows.shape[1:], rows.dtype)
        if (rows.shape[1:], rows.dtype) != self._row:
            raise FeatureError(f"rows of shape {rows.shape[1:]} {rows.dtype} do not fit {self.path}, "
                               f"which holds {self._row[0]} {self._row[1]}")
        self._buffer.append((list(ids), [int(p) for p in positions], np.asarray(rows)))
        self.done.update(map(str, ids))
        if sum(b[2].nbytes for b in self._buffer) >= self.part_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one part."""
        if not self._buffer:
            return
        if not (self.parts / "config.json").is_file():
            self.parts.mkdir(parents=True, exist_ok=True)
            write_json(self.parts / "config.json", self.config)
        number = 1 + max((int(p.stem.split("-")[1]) for p in self._part_index), default=-1)
        index = self.parts / f"part-{number:06d}.json"
        with atomic_path(index.with_suffix(".npy")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.concatenate([b[2] for b in self._buffer]))
        write_json(index, {"ids": [i for b in self._buffer for i in b[0]],
                           "positions": [p for b in self._buffer for p in b[1]]})
        self._part_index.append(index)
        self._buffer = []

    def finish(self, **manifest: Any) -> None:
        """Pack the existing store and all parts into ``<path>``; then remove the parts."""
        self.flush()
        if not self._part_index:
            if self.store is None:
                raise FeatureError(f"no features to pack into {self.path}")
            return
        sources = [_Source.of_store(self.store)] if self.store else []
        for p in self._part_index:
            index = json.loads(p.read_text(encoding="utf-8"))
            sources.append(_Source(np.load(p.with_suffix(".npy"), mmap_mode="r"), index["ids"], index["positions"]))
        _pack(self.path, sources, dict(manifest, config=self.config), duplicates="first")
        self.store = PackedFeatures(self.path)
        shutil.rmtree(self.parts)
        self._part_index = []


class _Source:
    """Rows with their ids and input positions (one part, or one packed store)."""

    def __init__(self, rows: np.ndarray, ids: list, positions: list[int]):
        self.rows, self.ids, self.positions = rows, ids, positions

    @classmethod
    def of_store(cls, store: PackedFeatures) -> "_Source":
        ids = store.manifest["ids"]
        return cls(store.array, ids, store.manifest.get("positions") or list(range(len(ids))))


def _pack(path: Path, sources: list[_Source], manifest: dict, duplicates: str) -> None:
    """Write ``sources`` as one packed store, rows in stable position order.

    duplicates="first" keeps the first row of an id seen twice, "error" rejects it.
    """
    seen: set[str] = set()
    order: list[tuple[int, int, int]] = []  # (position, source, row)
    for s, src in enumerate(sources):
        for r, (i, pos) in enumerate(zip(src.ids, src.positions)):
            if str(i) in seen:
                if duplicates == "error":
                    raise FeatureError(f"image {i} appears in more than one input of {path}")
                continue
            seen.add(str(i))
            order.append((pos, s, r))
    order.sort(key=lambda e: e[0])
    first = sources[0].rows
    shape = (len(order), *first.shape[1:])
    chunk = max(1, (64 << 20) // max(1, first[:1].nbytes))
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype, shape=shape)
        by_source: list[list[tuple[int, int]]] = [[] for _ in sources]
        for k, (_, s, r) in enumerate(order):
            by_source[s].append((k, r))
        for src, pairs in zip(sources, by_source):
            dest, rows = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
            for a in range(0, len(dest), chunk):
                out[dest[a:a + chunk]] = src.rows[rows[a:a + chunk]]
        out.flush()
        del out
    info = {"ids": [sources[s].ids[r] for _, s, r in order], "positions": [p for p, _, _ in order],
            "shape": list(shape), "dtype": str(first.dtype), "count": len(order), **manifest}
    write_json(path.with_suffix(".json"), info)


def merge_packed(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, **manifest: Any) -> None:
    """Join packed stores with disjoint ids (e.g. the shards of one extraction) into ``output``.

    The inputs must share ``config``, row shape and dtype. Rows are ordered by their ``positions``
    (so the shards of one input list merge into that list's order); ``skipped`` lists are joined;
    other manifest entries are kept where all inputs agree.
    """
    if not inputs:
        raise ValueError("merge_packed needs at least one input")
    stores = [PackedFeatures(p) for p in inputs]
    first = stores[0]
    for st in stores[1:]:
        if st.manifest.get("config") != first.manifest.get("config"):
            raise FeatureError(f"{st.path} and {first.path} were written with different configurations: "
                               f"{st.manifest.get('config')} vs {first.manifest.get('config')}")
        if (st.array.shape[1:], st.array.dtype) != (first.array.shape[1:], first.array.dtype):
            raise FeatureError(f"{st.path} holds rows {st.array.shape[1:]} {st.array.dtype}, "
                               f"{first.path} holds {first.array.shape[1:]} {first.array.dtype}")
    per_file = {"ids", "positions", "shape", "count", "skipped"}
    common = {k: v for k, v in first.manifest.items()
              if k not in per_file and all(st.manifest.get(k) == v for st in stores)}
    skipped = [i for st in stores for i in st.manifest.get("skipped", [])]
    _pack(Path(output), [_Source.of_store(st) for st in stores],
          {**common, "skipped": skipped, "merged_from": [st.path.name for st in stores], **manifest},
          duplicates="error")


def open_features(path: str | os.PathLike) -> FeatureStore:
    """A folder store for a directory, a packed store for a ``.npy`` file."""
    p = Path(path)
    if p.suffix == ".npy":
        return PackedFeatures(p)
    if p.is_dir():
        return FolderFeatures(p)
    raise FeatureError(f"feature path {p} is neither a folder of per-image files nor a packed .npy file")
