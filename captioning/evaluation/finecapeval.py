"""FineCapEval (and FineShapesEval) scoring of generated captions (``tools/eval_finecapeval.py``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from captioning.cli import InputError
from captioning.fineshapes.dataset import load_scenes
from captioning.metrics import language_eval, load_finecapeval, score_finecapeval, truth_metrics
from captioning.utils.io import read_json, write_json


def read_generated(path: str | os.PathLike) -> dict[str, str]:
    """``{image id: caption}`` from an inference output, or the ``imgToEval`` of a results file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generated captions not found: {path}")
    data = read_json(path)
    if isinstance(data, dict) and "imgToEval" in data:
        data = {k: v["caption"] for k, v in data["imgToEval"].items()}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise InputError(f"{path}: expected a JSON object {{image id: caption}}")
    return {str(k): v for k, v in data.items()}


def evaluate_finecapeval(csv_path: str | os.PathLike, generated_path: str | os.PathLike,
                         output_path: str | os.PathLike | None = None, scenes_path: str | os.PathLike | None = None,
                         caption_metrics: bool = True) -> dict[str, Any]:
    """Criterion scores (faithful substring rule and token level), overall, caption metrics against
    the CSV captions, and -- for FineShapesEval, given the scene file -- exact truth metrics.

    Writes the result to ``output_path`` (default: ``<generated stem>_finecapeval.json`` beside
    the generated file) and returns it.
    """
    data = load_finecapeval(csv_path)
    generated = read_generated(generated_path)
    result: dict[str, Any] = {"criteria": score_finecapeval(data, generated),
                              "n_rows": data.n_rows, "n_rows_skipped": data.n_skipped}
    if caption_metrics:
        preds = [{"image_id": k, "caption": generated[k]} for k in data.captions]
        result["caption"] = language_eval(preds, data.captions)["overall"]
    if scenes_path is not None:
        scenes = load_scenes(scenes_path)
        result["truth"] = truth_metrics({k: generated[k] for k in data.captions}, scenes)
    out = Path(output_path) if output_path else Path(generated_path).with_name(Path(generated_path).stem + "_finecapeval.json")
    write_json(out, result, indent=2)
    result["output_path"] = str(out)
    return result
