"""Cached vs uncached greedy decoding of the transformer captioner, measured side by side.

Uncached is the original's scheme: every step re-decodes the whole prefix and re-projects the
encoder memory for cross-attention. Cached decodes one token per step against stored self-attention
keys/values and cross-attention keys/values computed once. Every row is forced to the full length
(EOS disabled) so both paths do ``length`` steps.

    .venv/bin/python bench/bench_decoding.py [--device cuda] [--repeats 3] [--threads 1]

On a shared CPU, one thread gives steadier numbers: with more OpenMP threads than free cores each
small matmul can stall for a scheduler slice, which swamps the per-step cost of cached decoding.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from captioning.models import TransformerCaptioner, sample

SIZES = {
    "faithful": dict(model=dict(vocab_size=9487, att_feat_size=2048, d_model=512, d_ff=2048, n_enc=6, n_dec=6,
                                num_heads=8), batch=10, tokens=196),
    "fineshapes": dict(model=dict(vocab_size=100, att_feat_size=2048, d_model=128, d_ff=512, n_enc=2, n_dec=2,
                                  num_heads=4), batch=50, tokens=16),
}


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(name: str, length: int, repeats: int, device: torch.device) -> None:
    cfg = SIZES[name]
    torch.manual_seed(0)
    model = TransformerCaptioner(**cfg["model"], max_length=length).to(device).eval()
    with torch.no_grad():
        model.model.generator.proj.bias[0] = -1e4  # never EOS: both paths run all steps
    att = torch.randn(cfg["batch"], cfg["tokens"], cfg["model"]["att_feat_size"], device=device)
    runs = {
        "encode only": lambda: model.encode(att),
        "cached": lambda: sample(model, att, use_cache=True),
        "uncached": lambda: sample(model, att, use_cache=False),
    }
    with torch.no_grad():
        same = torch.equal(runs["cached"]().seq, runs["uncached"]().seq)  # also warms up
        times = {k: [] for k in runs}
        for _ in range(repeats):  # interleaved, so load changes hit every variant alike
            for k, fn in runs.items():
                times[k].append(timed(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    enc = med["encode only"]
    print(f"{name}: batch {cfg['batch']}, {cfg['tokens']} visual tokens, {model.vocab_size + 1} classes, "
          f"length {length}, {device}, median of {repeats}, identical tokens: {same}")
    print(f"  encode only {enc * 1e3:8.1f} ms")
    print(f"  cached      {med['cached'] * 1e3:8.1f} ms   uncached {med['uncached'] * 1e3:8.1f} ms   "
          f"ratio {med['uncached'] / med['cached']:.1f}x end to end, "
          f"{(med['uncached'] - enc) / (med['cached'] - enc):.1f}x decoding steps only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in args.sizes:
        bench(name, args.length, args.repeats, torch.device(args.device))


if __name__ == "__main__":
    main()
