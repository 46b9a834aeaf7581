"""Batched CLIP feature extraction (docs/ORIGINAL.md §1.4-1.6): grid features for the captioner and
L2-normalised CLIP-S image embeddings.

``scripts/clip_prepro_feats.py``, ``scripts/clipscore_prepro_feats.py`` and their
``scripts_FineCapEval`` twins are thin entry points over :func:`grid_main` and :func:`clipscore_main`.

* Images are decoded and preprocessed by DataLoader workers; the model runs on batches; a
  background thread writes the previous batch while the next one is computed.
* Resumable: ids already stored are skipped. Per-image files are written atomically; the packed
  format collects atomically written parts and packs them at the end (``captioning.data.features``).
* An unreadable image is never a silent zero feature: the run writes the readable ones, then
  fails listing the bad ids, or with ``skip_bad`` reports them and records them in the manifest.
* Outputs: ``<output_dir>_clip_<model>_att`` (grid, (H, W, C) float32 per image),
  ``<output_dir>_clip_<model>_fc`` (with ``--fc``: CLIP's pooled image embedding, unnormalised;
  the original's fc was a degenerate constant vector, §10.3), ``<output_dir>_clipscore_vis``
  (embeddings). Each is a folder of per-image files or, with ``--format packed``, one
  ``.npy`` + ``.json``; with ``--n_jobs N`` a packed output is one file per shard, joined by
  ``--merge``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm import tqdm

import clip
from clip.images import ImageReadError, open_rgb
from clip.model import CLIP, ModifiedResNet, patch_grid
from captioning.data.karpathy import image_id as karpathy_id
from captioning.cli import ArgumentParser, InputError, at_least, entry_point
from captioning.utils.io import read_json
from captioning.data.features import FeatureWriter, FolderWriter, PackedWriter, merge_packed


class ImageListError(InputError):
    """The input JSON does not describe a usable image list."""


class BadImagesError(InputError):
    """Some images could not be read."""


@dataclass(frozen=True)
class ImageEntry:
    id: Any            # the feature key: cocoid (Karpathy) or id (prepro_labels, FineCapEval)
    path: Path
    position: int      # index in the input list (orders packed rows)


def read_image_list(input_json: str | Path, images_root: str | Path, stem_ids: bool = False) -> list[ImageEntry]:
    """Images of a Karpathy split file (``filepath``/``filename``/``cocoid``, path
    ``images_root/filepath/filename``), a ``prepro_labels`` output or a FineCapEval file
    (``file_path``/``id``, path ``images_root/file_path``).

    stem_ids (FineCapEval, docs/ORIGINAL.md §1.6): the id must be the file stem; an entry without ``id`` gets it.
    """
    info = read_json(input_json)
    if not isinstance(info, dict) or not isinstance(info.get("images"), list):
        raise ImageListError(f"{input_json}: expected a top-level 'images' list")
    root, entries, seen = Path(images_root), [], set()
    for k, img in enumerate(info["images"]):
        if "filepath" in img and "filename" in img:
            if "cocoid" not in img and "imgid" not in img:
                raise ImageListError(f"{input_json}: images[{k}] is a Karpathy entry without 'cocoid' (or 'imgid')")
            image_id, path = karpathy_id(img), root / img["filepath"] / img["filename"]
        elif "file_path" in img:
            path = root / img["file_path"]
            stem = Path(img["file_path"]).stem
            image_id = img.get("id", stem if stem_ids else None)
            if image_id is None:
                raise ImageListError(f"{input_json}: images[{k}] has 'file_path' but no 'id'")
            if stem_ids and str(image_id) != stem:
                raise ImageListError(f"{input_json}: images[{k}] has id {image_id!r} but FineCapEval ids must be "
                                     f"the file stem ({stem!r}); feature files and captions are matched by it")
        else:
            raise ImageListError(f"{input_json}: images[{k}] has neither 'filepath'+'filename' (Karpathy) nor "
                                 f"'file_path' (prepro_labels / FineCapEval): keys {sorted(img)}")
        if str(image_id) in seen:
            raise ImageListError(f"{input_json}: image id {image_id!r} appears more than once")
        seen.add(str(image_id))
        entries.append(ImageEntry(image_id, path, k))
    return entries


def shard(entries: Sequence[ImageEntry], n_jobs: int, job_id: int) -> list[ImageEntry]:
    """The original's split: ``entries[job_id::n_jobs]``."""
    if n_jobs < 1 or not 0 <= job_id < n_jobs:
        raise ValueError(f"need n_jobs >= 1 and 0 <= job_id < n_jobs, got n_jobs={n_jobs}, job_id={job_id}")
    return list(entries[job_id::n_jobs])


class ImageFiles(Dataset):
    """Decodes and preprocesses images; an unreadable one yields its error message instead."""

    def __init__(self, entries: Sequence[ImageEntry], transform: Callable[[Image.Image], Tensor]):
        self.entries, self.transform = list(entries), transform

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, k: int) -> tuple[int, Tensor | None, str | None]:
        path = self.entries[k].path
        try:
            return k, self.transform(open_rgb(path)), None
        except (OSError, ImageReadError) as err:
            return k, None, f"{type(err).__name__}: {err}"


def collate_images(items: list) -> tuple[list[int], Tensor | None, list[tuple[int, str]]]:
    """(indices of the readable images, their stacked tensors or None, [(index, error)])."""
    good = [(k, x) for k, x, _ in items if x is not None]
    bad = [(k, err) for k, x, err in items if x is None]
    return [k for k, _ in good], default_collate([x for _, x in good]) if good else None, bad


class GridFeatures:
    """images -> {"att": (N, h, w, C) grid} and, with fc, {"fc": (N, embed_dim) pooled embedding}.

    ResNet: the layer4 grid before attention pooling (§1.4); fc is the attention pool of that grid,
    i.e. ``encode_image``. ViT: the patch tokens after ln_post (CLS dropped), unprojected; fc is
    the projected CLS token. Results are float32 numpy arrays.
    """

    def __init__(self, model: CLIP, fc: bool = False):
        self.model, self.fc = model, fc

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> dict[str, np.ndarray]:
        visual = self.model.visual
        x = images.to(self.model.positional_embedding.device, non_blocking=True)
        out = {}
        if isinstance(visual, ModifiedResNet):
            grid = self.model.visual_grid(x)
            out["att"] = grid.permute(0, 2, 3, 1)
            if self.fc:
                out["fc"] = visual.attnpool(grid)
        else:
            tokens = visual.forward_tokens(x)
            out["att"] = patch_grid(tokens, x.shape[-2:], visual.conv1.kernel_size[0]).permute(0, 2, 3, 1)
            if self.fc:
                out["fc"] = tokens[:, 0] @ visual.proj
        return {k: v.float().cpu().numpy() for k, v in out.items()}


class ClipScoreEmbeddings:
    """images -> {"vis": (N, embed_dim)} L2-normalised CLIP image embeddings (§1.5)."""

    def __init__(self, model: CLIP):
        self.model = model

    def __call__(self, images: Tensor) -> dict[str, np.ndarray]:
        return {"vis": clip.image_embeddings(self.model, images, batch_size=len(images)).cpu().numpy()}


@dataclass
class ExtractReport:
    total: int                  # images in the list
    already_done: int           # skipped because stored
    written: int
    skipped: list[tuple[Any, str]] = field(default_factory=list)  # (id, reason), with skip_bad
    seconds: float = 0.0

    def __str__(self) -> str:
        rate = self.written / self.seconds if self.seconds else 0.0
        lines = [f"{self.written} written ({rate:.1f} images/s), {self.already_done} already done, "
                 f"{len(self.skipped)} skipped, of {self.total}"]
        lines += [f"  skipped {i}: {why}" for i, why in self.skipped]
        return "\n".join(lines)


def _write_batch(writers: dict[str, FeatureWriter], batch: list[ImageEntry], out: dict[str, np.ndarray]) -> None:
    for name, writer in writers.items():
        keep = [k for k, e in enumerate(batch) if str(e.id) not in writer.done]
        if keep:
            rows = out[name] if len(keep) == len(batch) else out[name][keep]
            writer.add([batch[k].id for k in keep], rows, [batch[k].position for k in keep])


def extract(entries: Sequence[ImageEntry], transform: Callable[[Image.Image], Tensor],
            forward: Callable[[Tensor], dict[str, np.ndarray]], writers: dict[str, FeatureWriter],
            batch_size: int = 32, num_workers: int = 0, skip_bad: bool = False, pin_memory: bool = False,
            progress: bool = True, manifest: dict | None = None) -> ExtractReport:
    """Extract the features of ``entries`` not yet in every writer, then finish the writers.

    ``forward`` maps a batch of preprocessed images to {writer name: (N, ...) array}. Unreadable
    images raise :class:`BadImagesError` after the readable ones are stored (the writers are not
    finished), or with ``skip_bad`` are reported and listed under ``skipped`` in the manifests.
    """
    todo = [e for e in entries if any(str(e.id) not in w.done for w in writers.values())]
    loader = DataLoader(ImageFiles(todo, transform), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_images, pin_memory=pin_memory)
    bad: list[tuple[ImageEntry, str]] = []
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(1) as sink, tqdm(total=len(todo), unit="img", disable=not progress) as bar:
            pending = None
            for ks, images, errors in loader:
                bad += [(todo[k], err) for k, err in errors]
                if images is not None:
                    out = forward(images)
                    if pending is not None:
                        pending.result()
                    pending = sink.submit(_write_batch, writers, [todo[k] for k in ks], out)
                bar.update(len(ks) + len(errors))
            if pending is not None:
                pending.result()
    finally:  # keep what was computed, also when interrupted
        for w in writers.values():
            w.flush()
    if bad and not skip_bad:
        shown = "\n".join(f"  id {e.id}: {err}" for e, err in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise BadImagesError(
            f"{len(bad)} of {len(todo)} image(s) could not be read:\n{shown}{more}\n"
            f"The other {len(todo) - len(bad)} features are stored; fix the images (or --images_root) and run "
            f"again (only missing ids are processed), or pass --skip_bad to leave these out.")
    for w in writers.values():
        w.finish(**(manifest or {}), skipped=[e.id for e, _ in bad])
    return ExtractReport(len(entries), len(entries) - len(todo), len(todo) - len(bad),
                         [(e.id, err) for e, err in bad], time.perf_counter() - start)


def source_stats(entries: Sequence[ImageEntry]) -> dict[str, list[int]]:
    """``{id: [size in bytes, mtime in ns]}`` of each readable image file (recorded in the manifests)."""
    out = {}
    for e in entries:
        try:
            st = e.path.stat()
        except OSError:
            continue
        out[str(e.id)] = [st.st_size, st.st_mtime_ns]
    return out


def previous_sources(writer: FeatureWriter) -> dict[str, list[int]]:
    """The source stats recorded by the run that wrote ``writer``'s existing features ({} if none)."""
    if isinstance(writer, FolderWriter):
        if not writer.manifest_path.is_file():
            return {}
        return read_json(writer.manifest_path).get("sources", {})
    store = getattr(writer, "store", None)
    return store.manifest.get("sources", {}) if store is not None else {}


def changed_sources(writers: dict[str, FeatureWriter], now: dict[str, list[int]]) -> list[str]:
    """Ids whose features exist but whose image file changed (size or mtime) since they were written."""
    changed: set[str] = set()
    for writer in writers.values():
        before = previous_sources(writer)
        changed.update(i for i in writer.done if i in before and i in now and list(before[i]) != list(now[i]))
    return sorted(changed)


def remove_outputs(bases: dict[str, str], args: argparse.Namespace, entries: Sequence[ImageEntry]) -> None:
    """``--redo``: delete this run's existing outputs (packed store and parts, or the entries' files)."""
    for feature, base in bases.items():
        if args.format == "packed":
            path = packed_path(base, args.n_jobs, args.job_id)
            for p in (path, path.with_suffix(".json")):
                p.unlink(missing_ok=True)
            shutil.rmtree(path.with_name(path.name + ".parts"), ignore_errors=True)
        else:
            ext = ".npz" if feature == "att" else ".npy"
            for e in entries:
                (Path(base) / f"{e.id}{ext}").unlink(missing_ok=True)
            suffix = "" if args.n_jobs == 1 else f"-shard{args.job_id}of{args.n_jobs}"
            (Path(base) / f"manifest{suffix}.json").unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- command lines

def build_parser(kind: str, finecapeval: bool) -> argparse.ArgumentParser:
    """The options of the grid (kind="grid") or CLIP-S (kind="clipscore") script."""
    what = "CLIP grid features" if kind == "grid" else "L2-normalised CLIP-S image embeddings"
    p = ArgumentParser(description=f"Extract {what} ({'FineCapEval' if finecapeval else 'COCO'} layout).")
    default_json = "data/FineCapEval.json" if finecapeval else "data/dataset_coco.json"
    p.add_argument("--input_json", default=default_json,
                   help="Karpathy split file, prepro_labels output or FineCapEval json" + (
                       " (ids must be file stems)" if finecapeval else ""))
    p.add_argument("--output_dir", default="data/FineCapEval" if finecapeval else "data/cocotalk",
                   help="output prefix: <output_dir>_clip_<model>_att, <output_dir>_clipscore_vis")
    p.add_argument("--images_root", default="datasets/FineCapEval/images" if finecapeval else "datasets/COCO/images",
                   help="folder the image paths of --input_json are relative to")
    if kind == "grid":
        p.add_argument("--model_type", default=None,
                       help="CLIP model name (default RN50), also the <model> of the output name; with --clip_model "
                            "only that label (default: the checkpoint's file stem)")
    else:
        p.add_argument("--model_type", default=None, help="CLIP model name (default ViT-B/32), unless --clip_model")
    p.add_argument("--clip_model", default=None, help="a CLIP checkpoint file (anything clip.load reads)")
    p.add_argument("--format", choices=["files", "packed"], default="files",
                   help="files: one file per image (the original's); packed: one .npy + .json (faster to read)")
    p.add_argument("--batch_size", type=int, default=32, help="images per forward pass (>= 1)")
    p.add_argument("--num_workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    p.add_argument("--fp16", action="store_true", help="fp16 weights like the released features (CUDA only)")
    p.add_argument("--num_threads", type=int, default=None,
                   help="torch CPU threads (default on CPU: the cores left after --num_workers, at least 1)")
    if kind == "grid":
        p.add_argument("--resolution", type=int, default=None,
                       help="input size (default 448 for ResNets as the original, the model's own for ViTs)")
        p.add_argument("--keep_aspect", action="store_true",
                       help="shorter side to --resolution + centre crop, instead of the original's square resize")
        p.add_argument("--fc", action="store_true", help="also store CLIP's pooled image embedding (unnormalised)")
        p.add_argument("--att_size", type=int, default=7, help="ignored (the original's unused option)")
    p.add_argument("--n_jobs", type=int, default=1, help="shards: this run takes images[job_id::n_jobs]")
    p.add_argument("--job_id", type=int, default=0, help="this run's shard, 0 <= job_id < n_jobs")
    p.add_argument("--merge", action="store_true",
                   help="join the --n_jobs packed shard files into one store instead of extracting")
    p.add_argument("--skip_bad", action="store_true", help="leave unreadable images out (reported) instead of failing")
    p.add_argument("--redo", action="store_true",
                   help="re-extract this run's images although features exist (needed when images changed since)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def output_bases(args: argparse.Namespace, kind: str, label: str) -> dict[str, str]:
    if kind == "clipscore":
        return {"vis": f"{args.output_dir}_clipscore_vis"}
    bases = {"att": f"{args.output_dir}_clip_{label}_att"}
    if args.fc:
        bases["fc"] = f"{args.output_dir}_clip_{label}_fc"
    return bases


def packed_path(base: str, n_jobs: int, job_id: int) -> Path:
    return Path(f"{base}.npy" if n_jobs == 1 else f"{base}-shard{job_id}of{n_jobs}.npy")


def _merge(bases: dict[str, str], n_jobs: int) -> None:
    for base in bases.values():
        shards = [packed_path(base, n_jobs, j) for j in range(n_jobs)]
        missing = [str(s) for s in shards if not s.is_file()]
        if missing:
            raise FileNotFoundError(f"cannot merge: shard file(s) missing (run those jobs first): {missing}")
        merge_packed(shards, f"{base}.npy")
        print(f"merged {n_jobs} shards into {base}.npy")


def run(argv: Sequence[str] | None, kind: str, finecapeval: bool = False) -> ExtractReport | None:
    """Parse the command line and extract (or merge); the scripts call this."""
    args = build_parser(kind, finecapeval).parse_args(argv)
    if args.n_jobs < 1 or not 0 <= args.job_id < args.n_jobs:
        raise InputError("need --n_jobs >= 1 and 0 <= --job_id < --n_jobs")
    at_least(1, "--batch_size", args.batch_size)
    at_least(0, "--num_workers", args.num_workers)
    if args.num_threads is not None:
        at_least(1, "--num_threads", args.num_threads)
    if kind == "grid" and args.resolution is not None:
        at_least(32, "--resolution", args.resolution)
    if args.fp16 and not args.device.startswith("cuda"):
        raise InputError(f"--fp16 needs a CUDA device, not {args.device!r} (CPU extraction runs in fp32)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {args.device} but CUDA is not available here; use --device cpu")
    if args.num_threads or args.device == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(args.num_threads or max(1, cores - args.num_workers))
    name = args.model_type or ("RN50" if kind == "grid" else "ViT-B/32")
    label = args.model_type or (Path(args.clip_model).stem if args.clip_model else name)
    bases = output_bases(args, kind, label)
    if args.merge:
        if args.format != "packed" or args.n_jobs == 1:
            raise InputError("--merge joins packed shards: give --format packed and the shards' --n_jobs "
                         "(per-image files of all shards already share one folder)")
        _merge(bases, args.n_jobs)
        return None

    entries = shard(read_image_list(args.input_json, args.images_root, stem_ids=finecapeval), args.n_jobs, args.job_id)
    if not args.clip_model and name not in clip.available_models():
        raise InputError(f"unknown CLIP model {name!r}; give one of {clip.available_models()} or --clip_model")
    checkpoint = Path(args.clip_model) if args.clip_model else clip.model_file(name)
    model, clip_transform = clip.load(checkpoint, device=args.device, fp16=args.fp16)
    config: dict[str, Any] = {"kind": kind, "model_sha256": file_sha256(checkpoint), "fp16": args.fp16}
    if kind == "grid":
        resnet = isinstance(model.visual, ModifiedResNet)
        resolution = args.resolution or (448 if resnet else model.visual.input_resolution)
        transform = clip.transforms.grid_preprocess(resolution, keep_aspect=args.keep_aspect)
        forward: Callable = GridFeatures(model, fc=args.fc)
        config.update(resolution=resolution, keep_aspect=args.keep_aspect)
    else:
        transform, forward = clip_transform, ClipScoreEmbeddings(model)
        config.update(resolution=clip_transform.n_px, keep_aspect=True)

    suffix = "" if args.n_jobs == 1 else f"-shard{args.job_id}of{args.n_jobs}"
    if args.redo:
        remove_outputs(bases, args, entries)
    writers: dict[str, FeatureWriter] = {}
    for feature, base in bases.items():
        cfg = dict(config, feature=feature)
        if args.format == "packed":
            writers[feature] = PackedWriter(packed_path(base, args.n_jobs, args.job_id), cfg)
        else:
            writers[feature] = FolderWriter(base, ".npz" if feature == "att" else ".npy", cfg,
                                            manifest_name=f"manifest{suffix}.json")
    sources = source_stats(entries)
    changed = changed_sources(writers, sources)
    if changed:
        raise InputError(f"{len(changed)} image(s) changed since their features were written (size or modification "
                         f"time), e.g. ids {changed[:5]}; run again with --redo to re-extract")
    manifest = {"model": str(args.clip_model or name), "source_json": str(args.input_json),
                "source_sha256": file_sha256(args.input_json), "images_root": str(args.images_root),
                "n_jobs": args.n_jobs, "job_id": args.job_id, "torch": torch.__version__, "sources": sources}
    print(f"{kind} features of {len(entries)} images with {manifest['model']} at {config['resolution']} px on "
          f"{args.device} -> " + ", ".join(str(packed_path(b, args.n_jobs, args.job_id)) if args.format == "packed"
                                           else b + "/" for b in bases.values()), flush=True)
    report = extract(entries, transform, forward, writers, batch_size=args.batch_size, num_workers=args.num_workers,
                     skip_bad=args.skip_bad, pin_memory=args.device.startswith("cuda"), progress=not args.quiet,
                     manifest=manifest)
    print(report, flush=True)
    return report


def grid_main(argv: Sequence[str] | None = None, finecapeval: bool = False) -> int:
    return _main(argv, "grid", finecapeval)


def clipscore_main(argv: Sequence[str] | None = None, finecapeval: bool = False) -> int:
    return _main(argv, "clipscore", finecapeval)


@entry_point
def _main(argv: Sequence[str] | None, kind: str, finecapeval: bool) -> int:
    run(argv, kind, finecapeval)
    return 0
