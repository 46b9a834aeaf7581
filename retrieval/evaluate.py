"""How well a FineShapes CLIP sees fine detail (``retrieval/train_pl.py --task pretrain``, EVALUATE=1).

On a split of FineShapes (images with CLIP's preprocessing at the model's resolution unless said):

* ``retrieval``: text->image and image->text R@K with one full description per image
  (``full``) and with each image's first reference (``reference``, as the original's retrieval
  evaluation), by :func:`captioning.metrics.image_text_retrieval`;
* ``sensitivity``: per detail, the share of images whose full description is closer to the image
  than its twin with that one detail wrong (:mod:`retrieval.details`), without and with the reward
  prompt "A photo depicts";
* ``clip_s``: mean CLIP-S (2.5 max(cos, 0), prompt "A photo depicts") of the full description and of
  the consensus reference (the one with the highest CIDEr-D against the image's other references),
  and the share of images where CLIP-S prefers the true colour to a wrong one;
* ``resolution``: the same model at larger inputs (the attention pool interpolates its positional
  embedding): pooled-embedding sensitivity and R@1, and linear probes on the layer4 grid averaged to
  the world's 3 x 3 cells (the colour, shape and size in each cell, or empty; the background),
  trained by ridge regression on training images.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import clip
from captioning.fineshapes import Scene
from captioning.fineshapes.dataset import load_scenes
from captioning.fineshapes.world import BACKGROUNDS, COLORS, GRID, SHAPES, SIZES
from captioning.metrics.clipscore import PROMPT, clip_s
from captioning.metrics.retrieval import image_text_retrieval
from cider import CiderD
from retrieval.data import Entry, load_images, normalize, read_karpathy
from retrieval.details import DETAILS, description_and_twin, details_of


def image_features(model: clip.CLIP, images: Tensor, batch_size: int = 256) -> Tensor:
    """L2-normalised embeddings of uint8 images (N, 3, H, W), by :func:`clip.image_embeddings` (an
    inference tensor, float32), CLIP-normalised ``batch_size`` images at a time; sets eval mode."""
    model.eval()
    return clip.image_embeddings(model, (normalize(x) for x in images.split(batch_size)))


def _prefix(texts: list[str], prompt: bool) -> list[str]:
    return [f"{PROMPT} {t}" for t in texts] if prompt else texts


def descriptions(scenes: Sequence[Scene], seed: int) -> list[str]:
    """One fixed, randomly phrased full description per scene."""
    return [description_and_twin(s, "background", np.random.default_rng([seed, k, 99]))[0]
            for k, s in enumerate(scenes)]


def twin_sensitivity(model: clip.CLIP, feats: Tensor, scenes: Sequence[Scene], seed: int, prompt: bool = False,
                     repeats: int = 4) -> dict[str, float]:
    """Per detail: P(cos(image, description) > cos(image, its twin)) over the images where it applies,
    averaged over ``repeats`` random (description, twin) pairs per image."""
    out: dict[str, float] = {}
    for d, detail in enumerate(DETAILS):
        applies = [k for k, s in enumerate(scenes) if detail in details_of(s)]
        rows = applies * repeats
        pairs = [description_and_twin(scenes[k], detail, np.random.default_rng([seed, k, d, i // len(applies)]))
                 for i, k in enumerate(rows)]
        pos = clip.text_embeddings(model, _prefix([p for p, _ in pairs], prompt), truncate=True)
        neg = clip.text_embeddings(model, _prefix([t for _, t in pairs], prompt), truncate=True)
        img = feats[rows]
        out[detail] = float(((img * pos).sum(-1) > (img * neg).sum(-1)).float().mean())
    return out


def consensus_references(entries: Sequence[Entry]) -> list[str]:
    """Per image, the reference with the highest CIDEr-D against the image's other references."""
    candidates, refs, owner = [], [], []
    for k, e in enumerate(entries):
        sents = [" ".join(c) for c in e.captions]
        for j, s in enumerate(sents):
            candidates.append(s)
            refs.append(sents[:j] + sents[j + 1:] or [s])
            owner.append(k)
    scores = CiderD().score(candidates, refs)
    best: dict[int, tuple[float, str]] = {}
    for k, s, c in zip(owner, scores, candidates):
        if k not in best or s > best[k][0]:
            best[k] = (float(s), c)
    return [best[k][1] for k in range(len(entries))]


def clip_s_numbers(model: clip.CLIP, feats: Tensor, scenes: Sequence[Scene], entries: Sequence[Entry],
                   seed: int) -> dict[str, float]:
    """Mean CLIP-S of full descriptions and consensus references; P(true colour scores higher)."""
    def scores(texts: list[str]) -> Tensor:
        return clip_s(feats, clip.text_embeddings(model, _prefix(texts, True), truncate=True))

    d = DETAILS.index("color")
    pairs = [description_and_twin(s, "color", np.random.default_rng([seed, k, d])) for k, s in enumerate(scenes)]
    full, wrong = scores([p for p, _ in pairs]), scores([t for _, t in pairs])
    consensus = scores(consensus_references(entries))
    return {"full_description": float(full.mean()), "consensus_reference": float(consensus.mean()),
            "true_color_wins": float((full > wrong).float().mean())}


_CELL_ATTRIBUTES = (("color", COLORS), ("shape", SHAPES), ("size", SIZES))


def _cell_targets(scenes: Sequence[Scene]) -> dict[str, np.ndarray]:
    """Per attribute, image and world cell (row-major): the object's value index, or the extra class "empty"."""
    out = {name: np.full((len(scenes), GRID * GRID), len(values)) for name, values in _CELL_ATTRIBUTES}
    for k, s in enumerate(scenes):
        for o in s.objects:
            cell = min(GRID - 1, int(o.y * GRID)) * GRID + min(GRID - 1, int(o.x * GRID))
            for name, values in _CELL_ATTRIBUTES:
                out[name][k, cell] = values.index(getattr(o, name))
    return out


def _ridge_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    n_classes: int, alpha: float = 1.0) -> float:
    """Accuracy of a one-vs-rest ridge classifier (standardised features, closed form)."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    a, b = (x_train - mean) / std, (x_test - mean) / std
    a, b = np.hstack([a, np.ones((len(a), 1))]), np.hstack([b, np.ones((len(b), 1))])
    targets = np.eye(n_classes)[y_train]
    w = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ targets)
    return float(((b @ w).argmax(1) == y_test).mean())


@torch.no_grad()
def _grid_cells(model: clip.CLIP, images: Tensor, batch_size: int = 128) -> np.ndarray:
    """(N, 9, C): the layer4 grid averaged onto the world's 3 x 3 cells."""
    model.eval()
    out = [F.adaptive_avg_pool2d(model.visual_grid(normalize(x)).float(), GRID).flatten(2).transpose(1, 2)
           for x in images.split(batch_size)]
    return torch.cat(out).numpy()


def grid_probes(model: clip.CLIP, train_images: Tensor, train_scenes: Sequence[Scene], test_images: Tensor,
                test_scenes: Sequence[Scene]) -> dict[str, float]:
    """Linear-probe accuracies on grid features: each cell's colour, shape and size (or empty), the background."""
    a, b = _grid_cells(model, train_images), _grid_cells(model, test_images)
    ta, tb = _cell_targets(train_scenes), _cell_targets(test_scenes)
    flat_a, flat_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    out = {f"cell_{name}": _ridge_accuracy(flat_a, ta[name].ravel(), flat_b, tb[name].ravel(), len(values) + 1)
           for name, values in _CELL_ATTRIBUTES}
    bg_a = np.array([BACKGROUNDS.index(s.background) for s in train_scenes])
    bg_b = np.array([BACKGROUNDS.index(s.background) for s in test_scenes])
    out["background"] = _ridge_accuracy(a.mean(1), bg_a, b.mean(1), bg_b, len(BACKGROUNDS))
    return out


def evaluate_fineshapes_clip(model: clip.CLIP, dataset_json: str | Path, scenes_json: str | Path,
                             images_root: str | Path, split: str = "test", seed: int = 0,
                             resolutions: Sequence[int] = (), n_probe_train: int = 2000) -> dict[str, Any]:
    """Every number of the module docstring for ``model`` on ``split`` (see there)."""
    model = model.float().eval()
    scenes_by_id = load_scenes(scenes_json)
    entries = read_karpathy(dataset_json, split)
    scenes = [scenes_by_id[str(e.image_id)] for e in entries]
    res = model.visual.input_resolution
    images = load_images(images_root, [e.path for e in entries], res)
    feats = image_features(model, images)
    texts = descriptions(scenes, seed)
    report: dict[str, Any] = {"split": split, "n_images": len(entries), "resolution": res, "seed": seed}
    references = [" ".join(e.captions[0]) for e in entries]
    report["retrieval"] = {
        "full": image_text_retrieval((feats @ clip.text_embeddings(model, texts, truncate=True).t()).numpy()),
        "reference": image_text_retrieval((feats @ clip.text_embeddings(model, references, truncate=True).t()).numpy()),
    }
    report["sensitivity"] = {"no_prompt": twin_sensitivity(model, feats, scenes, seed),
                             "prompt": twin_sensitivity(model, feats, scenes, seed, prompt=True)}
    report["clip_s"] = clip_s_numbers(model, feats, scenes, entries, seed)
    if resolutions:
        train_entries = read_karpathy(dataset_json, "train")[:n_probe_train]
        train_scenes = [scenes_by_id[str(e.image_id)] for e in train_entries]
        report["resolutions"] = {}
        for r in resolutions:
            imgs = images if r == res else load_images(images_root, [e.path for e in entries], r)
            train_imgs = load_images(images_root, [e.path for e in train_entries], r)
            f = image_features(model, imgs)
            sims = (f @ clip.text_embeddings(model, texts, truncate=True).t()).numpy()
            report["resolutions"][str(r)] = {
                "grid": r // 32,
                "sensitivity": twin_sensitivity(model, f, scenes, seed),
                "t2i_R@1": image_text_retrieval(sims)["t2i"]["R@1"],
                "probe": grid_probes(model, train_imgs, train_scenes, imgs, scenes),
            }
    return report


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`evaluate_fineshapes_clip`'s report."""
    lines = [f"FineShapes {report['split']} ({report['n_images']} images, {report['resolution']} px)"]
    for kind, r in report["retrieval"].items():
        lines.append(f"  retrieval ({kind}): " + ", ".join(
            f"{d} R@{k} {r[d][f'R@{k}']:.1f}" for d in ("t2i", "i2t") for k in (1, 5, 10)))
    for kind, s in report["sensitivity"].items():
        lines.append(f"  sensitivity ({kind}): " + ", ".join(f"{d} {v:.3f}" for d, v in s.items()))
    c = report["clip_s"]
    lines.append(f"  CLIP-S: full description {c['full_description']:.3f}, consensus reference "
                 f"{c['consensus_reference']:.3f}, true colour wins {c['true_color_wins']:.3f}")
    for r, v in report.get("resolutions", {}).items():
        lines.append(f"  at {r} px ({v['grid']}x{v['grid']} grid): t2i R@1 {v['t2i_R@1']:.1f}; sensitivity "
                     + ", ".join(f"{d} {x:.3f}" for d, x in v["sensitivity"].items()) + "; probes "
                     + ", ".join(f"{d} {x:.3f}" for d, x in v["probe"].items()))
    return "\n".join(lines)
