"""Generate FineShapes, the embedded fine-grained captioning world.

    python scripts/make_fineshapes.py --seed 123

writes PNG images to datasets/FineShapes/images/, the Karpathy-format
data/dataset_fineshapes.json, the FineCapEval-format pair data/FineShapesEval.{json,csv}
and the exact truth of every image in data/fineshapes_scenes.json.
"""
from __future__ import annotations

import sys
import time
from dataclasses import fields
from pathlib import Path

from captioning.cli import ArgumentParser, at_least, entry_point
from captioning.config import key_help
from captioning.fineshapes.dataset import FineShapesPaths, FineShapesSpec, generate


@entry_point
def main(argv: list[str] | None = None) -> int:
    spec_defaults, path_defaults = FineShapesSpec(), FineShapesPaths()
    parser = ArgumentParser(description=__doc__)
    spec_help, path_help = key_help(FineShapesSpec), key_help(FineShapesPaths)
    for f in fields(FineShapesSpec):
        parser.add_argument(f"--{f.name}", type=int, default=getattr(spec_defaults, f.name), help=spec_help[f.name])
    for f in fields(FineShapesPaths):
        parser.add_argument(f"--{f.name}", type=Path, default=getattr(path_defaults, f.name), help=path_help[f.name])
    parser.add_argument("--workers", type=int, default=0, help="processes drawing images (0: one per core, at most 4)")
    args = parser.parse_args(argv)
    for f in fields(FineShapesSpec):
        at_least(1 if f.name in ("n_train", "image_size", "refs_per_image", "max_objects") else 0, f"--{f.name}",
                 getattr(args, f.name))
    at_least(0, "--workers", args.workers)
    spec = FineShapesSpec(**{f.name: getattr(args, f.name) for f in fields(FineShapesSpec)})
    paths = FineShapesPaths(**{f.name: getattr(args, f.name) for f in fields(FineShapesPaths)})
    for path in (paths.images_dir / "x", paths.dataset_json, paths.eval_json, paths.eval_csv, paths.scenes_json):
        path.parent.mkdir(parents=True, exist_ok=True)  # an unwritable output fails before any work
    start = time.time()
    counts = generate(spec, paths, workers=args.workers)
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"FineShapes ({summary}) written in {time.time() - start:.1f}s: {paths.dataset_json}, "
          f"{paths.eval_json}, {paths.eval_csv}, {paths.scenes_json}, images in {paths.images_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
