"""CLIPScore / RefCLIPScore of your captions: the command line of jmhessel/clipscore.

    python tools/clipscore.py candidates.json image_dir [--references_json refs.json]
        [--compute_other_ref_metrics 0|1] [--save_per_instance out.json] [--clip_model ViT-B/32]

``candidates.json`` maps an image id to its caption, ``refs.json`` an image id to a list of
references (or one string); the images are the ``.png``/``.jpg``/``.jpeg``/``.tiff`` files of
``image_dir``, their file stems being the ids. Prints the same lines as the original
(``CLIPScore: 0.7892``; with references the coco-caption metrics first, then ``RefCLIPScore``)
and, with ``--save_per_instance``, writes ``{id: {"CLIPScore": s, "RefCLIPScore": r}}``.

CLIP-S = 2.5 * max(cos, 0) with the prompt "A photo depicts"; RefCLIPScore is Hessel et al.'s
harmonic mean with the best reference cosine (``RefCLIP-S-Hessel`` of
``captioning.metrics.clipscore``, the module the evaluation uses). ``--clip_model`` is any name or
file ``clip.load`` reads (or a grammar-CLIP file); CPU runs are float32, as the original warns.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import clip
from captioning.cli import ArgumentParser, at_least, entry_point
from captioning.evaluation.retrieval import encode_images
from captioning.metrics import CLIPScorer, language_eval
from captioning.utils.io import write_json
from clip.grammar import load_grammar_clip

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tiff")
OTHER_METRICS = (("Bleu_1", "BLEU-1"), ("Bleu_2", "BLEU-2"), ("Bleu_3", "BLEU-3"), ("Bleu_4", "BLEU-4"),
                 ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE"), ("CIDEr", "CIDER"), ("SPICE", "SPICE"))


def image_files(image_dir: str | Path) -> list[Path]:
    """The image files of a folder (the original's suffixes), sorted by name."""
    folder = Path(image_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"image_dir is not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} files in {folder}")
    return files


def _read_json(path: str, what: str) -> dict:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must map image ids to captions")
    return data


def _pick(mapping: dict, ids: list[str], what: str) -> list:
    missing = [i for i in ids if i not in mapping]
    if missing:
        raise ValueError(f"{len(missing)} image(s) of image_dir have no entry in the {what}, e.g. {missing[:5]}")
    return [mapping[i] for i in ids]


def score(candidates: dict[str, str], image_dir: str | Path, references: dict | None, clip_model: str,
          device: str, batch_size: int = 64, progress: bool = True) -> dict[str, dict[str, float]]:
    """Per-image ``CLIPScore`` (and ``RefCLIPScore`` given references), keyed by file stem."""
    files = image_files(image_dir)
    ids = [f.stem for f in files]
    cands = _pick(candidates, ids, "candidates JSON")
    refs = None
    if references is not None:
        refs = [[r] if isinstance(r, str) else list(r) for r in _pick(references, ids, "references JSON")]
    model = load_grammar_clip(clip_model, device=device)
    images = encode_images(model.clip, files, batch_size, progress)
    scores = CLIPScorer(model, batch_size=batch_size).score(images, cands, refs)
    out = {i: {"CLIPScore": float(s)} for i, s in zip(ids, scores["CLIP-S"])}
    if refs is not None:
        for i, r in zip(ids, scores["RefCLIP-S-Hessel"]):
            out[i]["RefCLIPScore"] = float(r)
    return out


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("candidates_json", help="candidates JSON mapping image id -> candidate")
    parser.add_argument("image_dir", help="folder of images, the file stems being the image ids")
    parser.add_argument("--references_json", default=None, help="references JSON mapping image id -> [references]")
    parser.add_argument("--compute_other_ref_metrics", nargs="?", const=1, default=1, type=int,
                        help="with references, also print BLEU-1..4, METEOR, ROUGE, CIDER, SPICE (1, default) "
                        "or not (0)")
    parser.add_argument("--save_per_instance", default=None, help="write per-image scores to this .json file")
    parser.add_argument("--clip_model", default="ViT-B/32", help="a CLIP name or file (clip.load; default ViT-B/32)")
    parser.add_argument("--batch_size", type=int, default=64, help="images / texts encoded at once")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    args = parser.parse_args(argv)
    at_least(1, "--batch_size", args.batch_size)
    if args.save_per_instance and not args.save_per_instance.endswith(".json"):
        print("error: --save_per_instance must be a path ending in .json", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        candidates = _read_json(args.candidates_json, "candidates JSON")
        references = _read_json(args.references_json, "references JSON") if args.references_json else None
        scores = score(candidates, args.image_dir, references, args.clip_model, device, args.batch_size)
    except (FileNotFoundError, ValueError, clip.WeightsUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if references is not None and args.compute_other_ref_metrics:
        ids = list(scores)
        other = language_eval([{"image_id": i, "caption": candidates[i]} for i in ids],
                              {i: [references[i]] if isinstance(references[i], str) else references[i] for i in ids})
        for key, name in OTHER_METRICS:
            if key in other["overall"]:
                print(f"{name}: {other['overall'][key]:.4f}")
    print(f"CLIPScore: {np.mean([s['CLIPScore'] for s in scores.values()]):.4f}")
    if references is not None:
        print(f"RefCLIPScore: {np.mean([s['RefCLIPScore'] for s in scores.values()]):.4f}")
    if args.save_per_instance:
        write_json(args.save_per_instance, scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
