"""GPU smoke run (a few minutes on one CUDA device), printing one table.

1. Faithful-size MLE and SCST steps (6 + 6 layers, d 512, V 9487, 196 x 2048 grids, 10 images x 5)
   through Lightning with ``precision: 16`` (the COCO configs' setting: fp16 autocast and a grad
   scaler) and ``bf16``: two optimiser steps each; the losses must be finite and, with 16, the
   scaler active.
2. RN50-size CLIP grid extraction throughput with ``--fp16`` weights (random), 448 px, batch 32.
3. Cached against uncached greedy decoding under fp16 and bf16 autocast (the CPU tests check
   this in fp32): share of rows with the same tokens and the largest log-prob difference on them.

Needs only the README's set-up (no data: random weights and features, a synthetic CIDEr-D table).
``--dry-run`` runs the same code on the CPU at the tiny size in fp32 (``make test`` does).

    PYTHONPATH=$PWD python bench/gpu_smoke.py [--dry-run]
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

import clip
from captioning.config import Config
from captioning.data.prepro import write_df
from captioning.models import TransformerCaptioner, sample
from captioning.training.module import CaptionerModule
from captioning.training.runs import trainer_precision
from cider import document_frequency
from clip.model import convert_to_fp16, tiny_clip_config

SIZES = {
    "faithful": dict(vocab_size=9487, att_feat_size=2048, d_model=512, d_ff=2048, N_enc=6, N_dec=6, num_att_heads=8,
                     tokens=196, batch=10),
    "tiny": dict(vocab_size=60, att_feat_size=32, d_model=32, d_ff=64, N_enc=1, N_dec=1, num_att_heads=2,
                 tokens=4, batch=4),
}
RN50 = dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64, vision_patch_size=None,
            context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)


def batch_for(size: dict, rng: random.Random) -> dict:
    b, v = size["batch"], size["vocab_size"]
    labels = np.zeros((b, 5, 18), dtype=np.int64)
    for row in labels.reshape(-1, 18):
        n = rng.randint(5, 16)
        row[1:1 + n] = [rng.randint(1, v) for _ in range(n)]
    return {"att_feats": torch.randn(b, size["tokens"], size["att_feat_size"]), "att_masks": None,
            "labels": torch.from_numpy(labels), "masks": torch.from_numpy((labels > 0) | (np.arange(18) < 2)).float(),
            "gts": [rows[:, 1:-1] for rows in labels]}


class Record(pl.Callback):
    """Losses of the training steps and the grad scaler's scale."""

    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def train_steps(size: dict, precision: str, scst: bool, device: str, tmp: Path) -> dict:
    """Two Lightning optimiser steps of MLE or SCST at ``precision``; loss, scaler, time, memory."""
    rng = random.Random(0)
    refs = [[" ".join(str(rng.randint(1, size["vocab_size"])) for _ in range(8)) + " 0" for _ in range(5)]
            for _ in range(200)]
    write_df(tmp / "smoke-idxs.p", *document_frequency(refs))
    cfg = Config()
    keys = {k: v for k, v in size.items() if k not in ("vocab_size", "tokens", "batch")}
    for key, value in dict(keys, self_critical_after=0 if scst else -1, cached_tokens=str(tmp / "smoke-idxs.p"),
                           precision=precision, noamopt=False).items():
        cfg.set(key, value)
    vocab = {str(i): f"w{i}" for i in range(1, size["vocab_size"] + 1)}
    module = CaptionerModule(cfg.to_flat_dict(), vocab)
    batch = batch_for(size, rng)
    loader = DataLoader([batch] * 2, batch_size=None, collate_fn=lambda item: item)
    record = Record()
    trainer = pl.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=2, logger=False,
                         precision=trainer_precision(precision), enable_checkpointing=False, limit_val_batches=0,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[record],
                         gradient_clip_val=cfg.optim.grad_clip_value)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    if device == "cuda":
        torch.cuda.synchronize()
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    finite = len(record.losses) == 2 and all(np.isfinite(record.losses))
    ok = finite and (scaler is not None) == (precision == "16" and device == "cuda")
    return {"seconds": (time.perf_counter() - start) / 2, "loss": record.losses[-1] if record.losses else float("nan"),
            "scale": scaler.get_scale() if scaler is not None else None, "ok": ok,
            "mem": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def extraction(device: str, dry_run: bool) -> dict:
    """Grid-feature images/s of a random RN50-size CLIP (fp16 weights on CUDA), 448 px."""
    torch.manual_seed(0)
    model = clip.CLIP(**(tiny_clip_config("resnet") if dry_run else RN50)).to(device).eval()
    if device == "cuda":
        convert_to_fp16(model)
    px, batch, rounds = (64, 4, 2) if dry_run else (448, 32, 5)
    images = torch.randn(batch, 3, px, px, device=device, dtype=model.dtype)
    with torch.inference_mode():
        grid = model.visual_grid(images)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(rounds):
            grid = model.visual_grid(images)
        if device == "cuda":
            torch.cuda.synchronize()
    rate = rounds * batch / (time.perf_counter() - start)
    return {"seconds": 1 / rate, "rate": rate, "ok": bool(torch.isfinite(grid).all()), "shape": tuple(grid.shape)}


def decoding_parity(size: dict, dtype: torch.dtype | None, device: str) -> dict:
    """Cached vs uncached greedy decoding under autocast (None: fp32)."""
    torch.manual_seed(0)
    model = TransformerCaptioner(vocab_size=size["vocab_size"], att_feat_size=size["att_feat_size"],
                                 d_model=size["d_model"], d_ff=size["d_ff"], n_enc=size["N_enc"], n_dec=size["N_dec"],
                                 num_heads=size["num_att_heads"]).to(device).eval()
    att = torch.randn(size["batch"] * 5, size["tokens"], size["att_feat_size"], device=device)
    with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        start = time.perf_counter()
        cached = sample(model, att, use_cache=True)
        seconds = time.perf_counter() - start
        uncached = sample(model, att, use_cache=False)
    same = (cached.seq == uncached.seq).all(1)
    diff = (cached.logprobs - uncached.logprobs)[same].abs().max().item() if same.any() else float("nan")
    return {"seconds": seconds, "same": float(same.float().mean()), "diff": diff,
            "ok": bool(same.float().mean() >= 0.9 and (diff < 0.05 if dtype else diff < 1e-4))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny size, fp32: check the script itself")
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on the CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    size = SIZES["tiny" if args.dry_run else "faithful"]
    precisions = ["32"] if args.dry_run else ["16", "bf16"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for step in ("MLE", "SCST"):
            for precision in precisions:
                r = train_steps(size, precision, step == "SCST", device, Path(tmp))
                scale = "" if r["scale"] is None else f"scale {r['scale']:.0f}"
                rows.append((f"{step} step", precision, r["seconds"], r["mem"], f"loss {r['loss']:.3f} {scale}", r["ok"]))
    r = extraction(device, args.dry_run)
    rows.append(("grid extraction", "fp16" if device == "cuda" else "32", r["seconds"], None,
                 f"{r['rate']:.0f} img/s, grid {r['shape']}", r["ok"]))
    for dtype in ([None] if args.dry_run else [torch.float16, torch.bfloat16]):
        r = decoding_parity(size, dtype, device)
        rows.append(("cached = uncached", str(dtype).replace("torch.", "") if dtype else "32", r["seconds"], None,
                     f"same tokens {r['same']:.0%}, max |d logprob| {r['diff']:.1e}", r["ok"]))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if device == 'cuda' else 'CPU (dry run)'}")
    print(f"{'check':<19}{'precision':<10}{'s/step':>8}{'GiB':>6}  {'detail':<48}ok")
    for name, precision, seconds, mem, detail, ok in rows:
        gib = f"{mem:6.1f}" if mem is not None else f"{'-':>6}"
        print(f"{name:<19}{precision:<10}{seconds:8.3f}{gib}  {detail:<48}{'yes' if ok else 'NO'}")
    return 0 if all(row[-1] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
