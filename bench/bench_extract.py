"""Feature-extraction speed, measured side by side in one run (CPU, fp32, about a minute).

1. Extraction (images/s): the full loop of scripts/clip_prepro_feats.py (DataLoader workers decode
   PNGs, batched forward, background writing, packing at the end) against the pure model forward
   on already-decoded tensors of the same images and batches; the loop runs with --workers decoding
   processes and with none (decoding in the main process, better when no core is free). Rounds
   alternate the variants, so load from other processes hits all alike; the ratio is the median of
   the per-round ratios.
2. Loader reads (items/s): features read as the captioning loader does (random order, one
   item at a time) from one packed .npy against per-image compressed .npz files, for
   FineShapes-sized grids (4x4x512, the rows the loop just wrote) and RN50-sized ones
   (14x14x2048, synthetic).

Images: the first --n images of FineShapes (make demo / tools/demo.py writes them). Model: a
random tiny ResNet CLIP (the FineShapes architecture) unless --clip_model is given.

    .venv/bin/python bench/bench_extract.py [--n 2048] [--batch 32] [--workers 1] [--threads 1] [--rounds 3]
"""
import argparse
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import clip
from captioning.data.extract import GridFeatures, ImageFiles, collate_images, extract, read_image_list
from captioning.data.features import FolderFeatures, FolderWriter, PackedFeatures, PackedWriter
from clip.model import tiny_clip_config


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (DataLoader workers)."""
    return time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + \
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime


def timed(fn, n: int) -> tuple[float, float]:
    """(images/s, CPU ms per image) of fn() over n images."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return n / (time.perf_counter() - wall), (cpu_seconds() - cpu) / n * 1e3


def forward_only(model: clip.CLIP, batches: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        for x in batches:
            model.visual_grid(x)


def full_loop(entries, transform, forward, out: Path, fmt: str, batch: int, workers: int) -> None:
    writer = PackedWriter(out / "att.npy") if fmt == "packed" else FolderWriter(out / "att", ".npz")
    extract(entries, transform, forward, {"att": writer}, batch_size=batch, num_workers=workers, progress=False)


def read_rate(store, ids: list, rounds: int = 2) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for i in ids:
            att = np.asarray(store[i], dtype=np.float32)
            att.reshape(-1, att.shape[-1])
    return rounds * len(ids) / (time.perf_counter() - start)


def write_both(root: Path, rows: np.ndarray) -> tuple[PackedFeatures, FolderFeatures]:
    ids = list(range(len(rows)))
    packed = PackedWriter(root / "packed.npy")
    packed.add(ids, rows, ids)
    packed.finish()
    FolderWriter(root / "files", ".npz").add(ids, rows)
    return PackedFeatures(root / "packed.npy"), FolderFeatures(root / "files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input_json", default="data/dataset_fineshapes.json")
    parser.add_argument("--images_root", default="datasets/FineShapes")
    parser.add_argument("--clip_model", default=None, help="a CLIP checkpoint (default: random tiny ResNet CLIP)")
    parser.add_argument("--n", type=int, default=2048, help="images")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes of the loop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both variants)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rn50_items", type=int, default=100, help="synthetic RN50-sized features for the read test")
    args = parser.parse_args()
    if not Path(args.input_json).is_file():
        raise SystemExit(f"{args.input_json} not found: run `.venv/bin/python tools/demo.py` first, or give "
                         "--input_json/--images_root of another image set")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.clip_model:
        model, _ = clip.load(args.clip_model)
    else:
        model = clip.CLIP(**tiny_clip_config("resnet")).eval()
    entries = read_image_list(args.input_json, args.images_root)[: args.n]
    transform = clip.transforms.grid_preprocess(args.resolution)
    data = ImageFiles(entries, transform)
    images = collate_images([data[k] for k in range(len(data))])[1]
    batches = list(images.split(args.batch))
    forward = GridFeatures(model)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.workers} worker(s), {len(entries)} images at "
          f"{args.resolution} px, batch {args.batch}; {load_average()}")

    loops = [("packed", args.workers), ("packed", 0), ("files", args.workers)]
    n = len(entries)
    rates: dict[str, list[float]] = {"forward": [], **{f"{fmt} {w}": [] for fmt, w in loops}}
    cpu: dict[str, list[float]] = {k: [] for k in rates}
    with tempfile.TemporaryDirectory() as tmp:
        forward_only(model, batches[:2])  # warm-up
        for r in range(args.rounds):
            rate, ms = timed(lambda: forward_only(model, batches), n)
            rates["forward"].append(rate)
            cpu["forward"].append(ms)
            for fmt, w in loops:
                out = Path(tmp) / f"{fmt}{w}-{r}"
                rate, ms = timed(lambda: full_loop(entries, transform, forward, out, fmt, args.batch, w), n)
                rates[f"{fmt} {w}"].append(rate)
                cpu[f"{fmt} {w}"].append(ms)
        grid_rows = np.asarray(PackedFeatures(Path(tmp) / f"packed{args.workers}-0" / "att.npy").array)

        print("\n1. extraction: images/s and CPU ms per image (all processes), medians of rounds;"
              "\n   ratio = median of the per-round ratios to forward only")
        print(f"   forward only on decoded tensors            {statistics.median(rates['forward']):8.1f}   "
              f"{statistics.median(cpu['forward']):5.2f} ms")
        for fmt, w in loops:
            got, ms = rates[f"{fmt} {w}"], statistics.median(cpu[f"{fmt} {w}"])
            ratios = [a / b for a, b in zip(got, rates["forward"])]
            label = f"{'packed .npy' if fmt == 'packed' else 'per-image .npz'}, {w} worker(s)"
            print(f"   full loop, {label:<31} {statistics.median(got):8.1f}   {ms:5.2f} ms   "
                  f"{statistics.median(ratios):6.1%} of forward (rounds: {', '.join(f'{r:.0%}' for r in ratios)})")

        print("\n2. loader reads, items/s (random order)")
        rng = np.random.default_rng(0)
        rn50 = np.maximum(rng.standard_normal((args.rn50_items, 14, 14, 2048), dtype=np.float32), 0)
        for name, rows in [("4x4x512 (FineShapes)", grid_rows), ("14x14x2048 (RN50)", rn50)]:
            packed, files = write_both(Path(tmp) / name.split()[0], rows)
            ids = list(range(len(rows)))
            random.Random(0).shuffle(ids)
            p, f = read_rate(packed, ids), read_rate(files, ids)
            print(f"   {name:<22} packed {p:9.0f}   per-image npz {f:7.0f}   packed/npz {p / f:6.1f}x")
    print(f"\n{load_average()}")


if __name__ == "__main__":
    main()
