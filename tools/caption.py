"""Caption your own images with a trained checkpoint.

    python tools/caption.py photo.jpg more_photos/ --ckpt save/clipRN50_clips/clipRN50_clips-last.ckpt

Prints ``file<TAB>caption`` per image (JPEG, PNG, or anything PIL reads, any size; folders are
searched for image files). --json writes {file: caption} as well. The CLIP and grid resolution
default to those the checkpoint was trained with; CUDA is used when available.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.inference import Captioner
from captioning.utils.io import write_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def expand(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no image files in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--ckpt", required=True, help="captioner checkpoint (save/<id>/<id>-last.ckpt)")
    parser.add_argument("--clip_model", default=None, help="feature CLIP (default: the checkpoint's)")
    parser.add_argument("--resolution", type=int, default=None, help="grid input size (default: the checkpoint's)")
    parser.add_argument("--beam_size", type=int, default=1)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write {file: caption} to this JSON file")
    args = parser.parse_args(argv)
    try:
        files = expand(args.images)
        captioner = Captioner.from_checkpoint(args.ckpt, args.clip_model, args.resolution, args.beam_size, args.device)
        captions = captioner.caption(files, progress=len(files) > 1)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f, c in zip(files, captions):
        print(f"{f}\t{c}")
    if args.json:
        write_json(args.json, {str(f): c for f, c in zip(files, captions)}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
