"""Text-to-image retrieval with CLIP for generated or ground-truth captions (``tools/eval_clip_retrieval.py``).

Each evaluated image contributes one caption; the similarity matrix (images x texts) of
L2-normalised CLIP embeddings gives R@1/5/10/50, median and mean rank in both directions
(the paper reports text-to-image). Texts are encoded without a prompt, as the original, and
truncated to the CLIP context (the original crashed on long captions).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import clip
from captioning.cli import InputError
from captioning.data.features import open_features
from captioning.data.karpathy import image_id, read_images, split_images
from captioning.evaluation.finecapeval import read_generated
from captioning.metrics import image_text_retrieval
from captioning.utils.io import write_json
from clip.images import open_rgb

MIN_PAIRS = 100  # fewer pairs than this give a warning


def first_gt_captions(input_json: str | os.PathLike, split: str = "test") -> dict[str, str]:
    """The first raw reference of every image of ``split`` in a Karpathy-format JSON (the ``--gt`` mode)."""
    return {str(image_id(im)): im["sentences"][0]["raw"].strip() for im in split_images(input_json, split)}


def image_paths(input_json: str | os.PathLike, images_root: str | os.PathLike) -> dict[str, Path]:
    """Image id -> file, from a Karpathy JSON (filepath/filename) or a prepro_labels / FineCapEval JSON (file_path)."""
    images = read_images(input_json)
    out = {}
    for im in images:
        key = str(im["id"] if "file_path" in im else image_id(im))
        rel = im["file_path"] if "file_path" in im else os.path.join(im.get("filepath", ""), im["filename"])
        out[key] = Path(images_root) / rel
    return out


def encode_images(model: clip.CLIP, paths: list[Path], batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """L2-normalised CLIP image embeddings with CLIP's own preprocessing (as the CLIP-S features):
    the files are read ``batch_size`` at a time and encoded by :func:`clip.image_embeddings`."""
    preprocess = clip.transforms.clip_preprocess(model.config["image_resolution"])

    def batches() -> Iterator[torch.Tensor]:
        for start in tqdm(range(0, len(paths), batch_size), desc="encoding images", unit="batch",
                          disable=not progress):
            yield torch.stack([preprocess(open_rgb(p)) for p in paths[start : start + batch_size]])

    return clip.image_embeddings(model, batches())


def evaluate_retrieval(captions: dict[str, str], clip_model: str, image_features: str | None = None,
                       input_json: str | None = None, images_root: str | None = None,
                       device: str = "cpu") -> dict[str, Any]:
    """Retrieval metrics of ``{image id: caption}`` against the images' CLIP embeddings.

    Image embeddings come from a CLIP-S feature store (``image_features``: folder or packed
    file, made with the same CLIP) or are computed from the images (``input_json`` + ``images_root``).
    """
    model, _ = clip.load(clip_model, device=device)
    ids = sorted(captions, key=lambda k: (len(k), k))
    if image_features:
        store = open_features(image_features)
        img = F.normalize(torch.from_numpy(np.stack([np.asarray(store[i], np.float32).reshape(-1) for i in ids])), dim=-1)
    elif input_json and images_root:
        paths = image_paths(input_json, images_root)
        missing = [i for i in ids if i not in paths]
        if missing:
            raise InputError(f"{len(missing)} captioned image(s) are not in {input_json}, e.g. {missing[:5]}")
        img = encode_images(model, [paths[i] for i in ids])
    else:
        raise InputError("give image_features, or input_json and images_root")
    txt = clip.text_embeddings(model, [captions[i] for i in ids], truncate=True).cpu()
    if img.shape[1] != txt.shape[1]:
        raise InputError(f"image features have {img.shape[1]} dims but {clip_model} embeds text in {txt.shape[1]}; "
                         "were they made with the same CLIP?")
    result = image_text_retrieval((img @ txt.T).numpy())
    result["n"] = len(ids)
    if len(ids) < MIN_PAIRS:
        result["warning"] = (f"only {len(ids)} image-caption pairs: recall over fewer than {MIN_PAIRS} pairs is coarse "
                             "and not comparable with the paper's (5000 COCO test images)")
        print(f"warning: {result['warning']}", file=sys.stderr)
    return result


def retrieval_output_path(gen_caption_path: str | os.PathLike | None, gt: bool, eval_dir: str = "eval_results") -> Path:
    """``eval_results/<id>_test_retrieval.json`` beside a results file, or ``gt_test_retrieval.json``."""
    if gt or gen_caption_path is None:
        return Path(eval_dir) / "gt_test_retrieval.json"
    p = Path(gen_caption_path)
    return p.with_name(p.stem + "_retrieval.json")


def run(gen_caption_path: str | None, gt: bool, clip_model: str, image_features: str | None, input_json: str | None,
        images_root: str | None, output: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Read captions, evaluate, write the JSON; returns the result with its path."""
    if gt:
        if not input_json:
            raise InputError("--gt needs --input_json (a Karpathy-format data set)")
        captions = first_gt_captions(input_json)
    else:
        if not gen_caption_path:
            raise InputError("give --gen_caption_path (eval_results/<id>_test.json) or --gt")
        captions = read_generated(gen_caption_path)
    result = evaluate_retrieval(captions, clip_model, image_features, input_json, images_root, device)
    path = Path(output) if output else retrieval_output_path(gen_caption_path, gt)
    write_json(path, result, indent=2)
    result["output_path"] = str(path)
    return result
