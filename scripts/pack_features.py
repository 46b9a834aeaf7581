"""Pack a folder of per-image feature files (the original's format) into one packed store.

    python scripts/pack_features.py --input_dir data/cocotalk_clip_RN50_att \
        --output data/cocotalk_clip_RN50_att.npy --input_json data/cocotalk.json
    python scripts/pack_features.py --input_dir data/cocotalk_clipscore_vis \
        --output data/cocotalk_clipscore_vis.npy --input_json data/cocotalk.json

Input: ``<id>.npz`` (key ``feat``, e.g. the (14, 14, 2048) CLIP-RN50 grids) or ``<id>.npy`` (e.g.
the 512-d CLIP-S vectors), read by ``captioning.data.features.FolderFeatures``; the training code
also reads such folders directly. Output: ``<output>.npy`` (rows stacked in id order, shapes kept)
plus ``<output>.json`` (ids and manifest), which ``input_att_dir`` / ``input_clipscore_vis_dir``
accept in place of the folder. Ids come from ``--input_json`` (``images[].id``, in order) or else
from the folder's file names. Every id must have a file. Files are written atomically; the work is
staged in ``<output>.parts/`` (roughly the output's size again) until the store is packed; a
killed run continues from the finished parts when started again.
"""
from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from captioning.cli import ArgumentParser, at_least, entry_point
from captioning.data.features import FeatureError, FolderFeatures, PackedWriter


def folder_ids(root: Path) -> list[str]:
    """Ids of the ``<id>.npz`` / ``<id>.npy`` files in ``root``, numerically sorted when all are numbers."""
    ids = sorted({p.stem for p in root.iterdir() if p.suffix in (".npz", ".npy") and not p.name.startswith(".")})
    return sorted(ids, key=int) if all(i.isdigit() for i in ids) else ids


def json_ids(path: Path) -> list[str]:
    """``images[].id`` of a prepro_labels / FineCapEval JSON, in order."""
    with open(path, encoding="utf-8") as f:
        images = json.load(f).get("images")
    if not images:
        raise ValueError(f"{path} has no 'images' list")
    return [str(img["id"]) for img in images]


def pack(input_dir: str, output: str, ids: list[str], dtype: str | None = None, threads: int = 4,
         chunk: int = 64) -> int:
    """Pack the features of ``ids`` from ``input_dir`` into ``output`` (a ``.npy`` path); returns the row count."""
    out = Path(output)
    if out.suffix != ".npy":
        raise ValueError(f"--output must end in .npy (the packed store's array file), got {out}")
    if out.exists() or out.with_suffix(".json").exists():
        raise FileExistsError(f"{out} already exists; remove it (and {out.with_suffix('.json')}) first")
    store = FolderFeatures(input_dir)
    if len(set(ids)) != len(ids):
        raise ValueError("the id list has duplicates")
    missing = [i for i in ids if i not in store]
    if missing:
        raise FeatureError(f"{len(missing)} of {len(ids)} ids have no file in {input_dir}, e.g. {missing[:5]}")
    writer = PackedWriter(out, config={"source": Path(input_dir).name, "dtype": dtype})
    todo = [(pos, i) for pos, i in enumerate(ids) if i not in writer.done]  # parts of a killed run are kept
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(todo), chunk):
            positions, batch = zip(*todo[start:start + chunk])
            rows = np.stack(list(pool.map(store.__getitem__, batch)))
            writer.add(list(batch), rows.astype(dtype) if dtype else rows, list(positions))
    writer.finish(source_dir=str(input_dir))
    return len(ids)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_dir", required=True, help="folder of <id>.npz / <id>.npy feature files")
    parser.add_argument("--output", required=True, help="packed store to write (<name>.npy, plus <name>.json)")
    parser.add_argument("--input_json", default=None, help="take the ids (and their order) from images[].id")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16"],
                        help="store rows in this dtype (default: as in the files; float16 halves the size, lossy)")
    parser.add_argument("--threads", type=int, default=4, help="files read in parallel")
    args = parser.parse_args(argv)
    at_least(1, "--threads", args.threads)
    start = time.time()
    try:
        ids = json_ids(Path(args.input_json)) if args.input_json else folder_ids(Path(args.input_dir))
        n = pack(args.input_dir, args.output, ids, args.dtype, args.threads)
    except ValueError as e:  # an id list or option that does not fit
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"packed {n} feature files from {args.input_dir} in {time.time() - start:.1f}s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
