"""Scoring a split's decoded captions and writing ``eval_results/<id>_<split>.json``.

The LightningModule decodes and collects one row per image (caption, perplexity, entropy, CLIP
metrics); this callback gathers the rows of every process at the end of validation and test,
scores them on the first process (coco-caption metrics when ``language_eval``, whose METEOR
process is reused across epochs by :func:`captioning.metrics.language_eval`), writes the results
file and logs the overall numbers under ``<split>/``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from captioning.metrics import diversity_stats, language_eval, refs_from_coco, refs_from_karpathy, write_eval_results

CLIP_METRICS = ("CLIP-S", "RefCLIP-S", "RefCLIP-S-Hessel", "grammar_prob")
SHOWN = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "CLIP-S", "RefCLIP-S", "grammar_prob")


def load_references(path: str, split: str) -> dict[Any, list[str]]:
    """Raw reference captions of a split from a Karpathy data set JSON or a COCO annotation file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"reference captions not found: {path} (config key input_ref_json)")
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    return refs_from_coco(path) if '"annotations"' in head else refs_from_karpathy(path, split)


def encode_rows(rows: list[dict[str, Any]]) -> Tensor:
    """Rows as JSON text in a uint8 tensor (UTF-8). JSON keeps what a row holds exactly: strings,
    int or str image ids as they are, and floats by their shortest repr (NaN and infinities
    included); anything else is refused (TypeError)."""
    return torch.frombuffer(bytearray(json.dumps(rows).encode("utf-8")), dtype=torch.uint8)


def decode_rows(data: Tensor) -> list[dict[str, Any]]:
    """The rows :func:`encode_rows` put in ``data``."""
    return json.loads(data.cpu().numpy().tobytes().decode("utf-8"))


def gather_rows(rows: list[dict[str, Any]], trainer: pl.Trainer) -> list[dict[str, Any]]:
    """Every process's rows in rank order, each image once (the first row of it: a distributed
    sampler pads with repeats). With several processes the rows travel as :func:`encode_rows` bytes
    through the trainer's strategy (lengths first, then the bytes padded to the longest)."""
    if trainer.world_size > 1:
        strategy = trainer.strategy
        data = encode_rows(rows).to(strategy.root_device)
        lengths = strategy.all_gather(torch.tensor([len(data)], device=strategy.root_device)).reshape(-1).tolist()
        padded = torch.zeros(max(lengths), dtype=torch.uint8, device=strategy.root_device)
        padded[:len(data)] = data
        parts = strategy.all_gather(padded)
        rows = [r for part, n in zip(parts, lengths) for r in decode_rows(part[:n])]
    unique: dict[Any, dict[str, Any]] = {}
    for r in rows:
        unique.setdefault(r["image_id"], r)
    return list(unique.values())


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def score_rows(rows: list[dict[str, Any]], run_id: str, split: str,
               refs: dict[Any, list[str]] | None) -> tuple[dict[str, float], Path]:
    """Score the rows (language metrics against ``refs`` when given), write the results file;
    returns the finite overall numbers and the file's path."""
    preds = [{"image_id": r["image_id"], "caption": r["caption"]} for r in rows]
    if refs is not None:
        result = language_eval(preds, refs)
    else:
        result = {"overall": {}, "imgToEval": {p["image_id"]: dict(p) for p in preds}}
    keys = ["perplexity", "entropy", *(k for k in CLIP_METRICS if rows and all(k in r for r in rows))]
    extra = {**{k: _mean(r[k] for r in rows) for k in keys}, **diversity_stats([r["caption"] for r in rows])}
    per_image = {r["image_id"]: {k: r[k] for k in keys} for r in rows}
    path = write_eval_results(result, run_id, split, overall=extra, per_image=per_image)
    overall = {**result["overall"], **extra}
    numbers = {k: float(v) for k, v in overall.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    return numbers, path


class CaptionEvaluation(pl.Callback):
    """Scores and saves the captions ``pl_module.take_eval_rows()`` hands over at each split's end."""

    def __init__(self, run_id: str, val_split: str, language_eval: bool, input_ref_json: str | None):
        self.run_id, self.val_split = run_id, val_split
        self.language_eval, self.input_ref_json = language_eval, input_ref_json
        self._refs: dict[str, dict[Any, list[str]]] = {}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, self.val_split)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "test")

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        rows = gather_rows(pl_module.take_eval_rows(), trainer)
        metrics: dict[str, float] = {}
        if trainer.is_global_zero and not trainer.sanity_checking:
            refs = None
            if self.language_eval:
                if split not in self._refs:
                    self._refs[split] = load_references(self.input_ref_json, split)
                refs = self._refs[split]
            metrics, path = score_rows(rows, self.run_id, split, refs)
            shown = ", ".join(f"{k} {metrics[k]:.4g}" for k in SHOWN if k in metrics)
            pl_module.print(f"[{split}] epoch {trainer.current_epoch}: {shown or 'language_eval off'} -> {path}")
        metrics = trainer.strategy.broadcast(metrics, src=0)
        for key, value in metrics.items():
            pl_module.log(f"{split}/{key}", value, rank_zero_only=False, sync_dist=False)
