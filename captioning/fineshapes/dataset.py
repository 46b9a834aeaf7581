"""Write the FineShapes data set: images, a Karpathy-format JSON, FineShapesEval and the scene truth.

Each image is drawn from its own random stream, seeded by (seed, split, index), so an image
does not depend on the size of any other split.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captioning.fineshapes.language import (
    ReferenceStyle,
    eval_phrases,
    full_description,
    raw_caption,
    reference_caption,
)
from captioning.fineshapes.parser import tokenize
from captioning.fineshapes.render import render
from captioning.fineshapes.world import Scene, sample_scene
from captioning.utils.io import atomic_path, write_json, write_text

SPLITS = ("train", "restval", "val", "test", "eval")
PHRASE_SEP = "\\;"


@dataclass(frozen=True)
class FineShapesSpec:
    """Sizes and seed of a FineShapes world."""

    seed: int = 123  # random seed: the same seed draws the same world
    image_size: int = 128  # side of the square images, in pixels
    n_train: int = 7500  # images in the train split (at least 1)
    n_restval: int = 500  # images in the restval split (trained on, as COCO's)
    n_val: int = 500  # images in the val split
    n_test: int = 500  # images in the test split
    n_eval: int = 500  # images of FineShapesEval (the FineCapEval-format benchmark)
    refs_per_image: int = 5  # reference captions per image
    max_objects: int = 3  # most shapes in one image

    def count(self, split: str) -> int:
        return getattr(self, f"n_{split}")


@dataclass(frozen=True)
class FineShapesPaths:
    """Where each output goes (defaults follow the original's layout).

    Image paths in the JSON files are relative to ``images_dir.parent`` (the ``--images_root``).
    """

    images_dir: Path = Path("datasets/FineShapes/images")  # folder of the PNG images
    dataset_json: Path = Path("data/dataset_fineshapes.json")  # Karpathy-format captions and splits
    eval_json: Path = Path("data/FineShapesEval.json")  # FineCapEval-format image list
    eval_csv: Path = Path("data/FineShapesEval.csv")  # FineCapEval-format criteria
    scenes_json: Path = Path("data/fineshapes_scenes.json")  # exact truth of every image


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def generate(spec: FineShapesSpec, paths: FineShapesPaths, progress: bool = True, workers: int = 0) -> dict[str, int]:
    """Generate every output of ``paths``; returns the number of images per split.

    ``workers`` processes draw and save the images (0: one per CPU core, at most 4); the
    result does not depend on it.
    """
    if spec.image_size < 32:
        raise ValueError(f"image_size must be at least 32 pixels, got {spec.image_size}")
    if spec.refs_per_image < 1:
        raise ValueError(f"refs_per_image must be at least 1, got {spec.refs_per_image}")
    paths.images_dir.mkdir(parents=True, exist_ok=True)
    jobs, n_dataset = [], 0
    for split in SPLITS:
        for i in range(spec.count(split)):
            stem = f"eval_{i:06d}" if split == "eval" else f"fs_{n_dataset:06d}"
            n_dataset += split != "eval"
            jobs.append((spec, paths.images_dir, split, i, stem))
    workers = workers or min(4, os.cpu_count() or 1)
    karpathy, scenes, eval_images, csv_rows = [], {}, [], []
    n_sentences = 0
    with multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.imap(_make_image, jobs, chunksize=64) if pool else map(_make_image, jobs)
        for (_, _, split, _, stem), (scene, captions) in tqdm(zip(jobs, results), total=len(jobs),
                                                              desc="FineShapes", unit="img", disable=not progress):
            filename = f"{stem}.png"
            file_path = f"{paths.images_dir.name}/{filename}"
            entry = {"split": "test" if split == "eval" else split, "file_path": file_path, **scene.to_json()}
            if split == "eval":
                eval_images.append({"file_path": file_path, "id": stem, "split": "test"})
                phrases = eval_phrases(scene)
                columns = [PHRASE_SEP.join(phrases[k]) for k in ("background", "object", "relation")]
                csv_rows += [[filename, caption, *columns] for caption in captions]
            else:
                imgid = len(karpathy)
                sentences = [{"tokens": tokenize(raw), "raw": raw, "imgid": imgid, "sentid": n_sentences + k}
                             for k, raw in enumerate(captions)]
                n_sentences += len(sentences)
                karpathy.append({
                    "filepath": paths.images_dir.name,
                    "filename": filename,
                    "imgid": imgid,
                    "cocoid": imgid,
                    "split": split,
                    "sentids": [s["sentid"] for s in sentences],
                    "sentences": sentences,
                })
                entry["cocoid"] = imgid
            scenes[stem] = entry
    write_json(paths.dataset_json, {"dataset": "fineshapes", "images": karpathy})
    write_json(paths.eval_json, {"images": eval_images})
    write_text(paths.eval_csv, _csv_text(csv_rows))
    write_json(paths.scenes_json, {"seed": spec.seed, "image_size": spec.image_size, "images": scenes})
    return {s: spec.count(s) for s in SPLITS}


def _make_image(job: tuple[FineShapesSpec, Path, str, int, str]) -> tuple[Scene, list[str]]:
    """Draw one scene, save its PNG, and write its captions (references, or full descriptions for eval)."""
    spec, images_dir, split, index, stem = job
    rng = image_rng(spec.seed, split, index)
    scene = sample_scene(rng, spec.max_objects)
    _save_png(render(scene, spec.image_size, rng), images_dir / f"{stem}.png")
    style = ReferenceStyle()
    describe = full_description if split == "eval" else reference_caption
    return scene, [raw_caption(describe(scene, rng), rng, style) for _ in range(spec.refs_per_image)]


def load_scenes(path: str | Path) -> dict[str, Scene]:
    """Scenes by image key: the file stem, and also ``str(cocoid)`` for data-set images."""
    with open(path, encoding="utf-8") as f:
        images = json.load(f)["images"]
    out = {}
    for stem, entry in images.items():
        scene = Scene.from_json(entry)
        out[stem] = scene
        if "cocoid" in entry:
            out[str(entry["cocoid"])] = scene
    return out


def _save_png(img, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "caption", "background", "object", "relation"])
    writer.writerows(rows)
    return buf.getvalue()
