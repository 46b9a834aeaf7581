"""Caption your own images with a trained checkpoint.

    python tools/caption.py photo.jpg more_photos/ --ckpt save/clipRN50_clips/clipRN50_clips-last.ckpt

Prints ``file<TAB>caption`` per image (JPEG, PNG, or anything PIL reads, any size; folders are
searched for image files). --json writes {file: caption} as well. The CLIP, grid resolution and
decoding settings default to those the checkpoint was trained with; CUDA is used when available.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from captioning.cli import ArgumentParser, at_least, entry_point
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


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--ckpt", required=True, help="captioner checkpoint (save/<id>/<id>-last.ckpt)")
    parser.add_argument("--clip_model", default=None, help="feature CLIP (default: the checkpoint's)")
    parser.add_argument("--resolution", type=int, default=None, help="grid input size (default: the checkpoint's)")
    parser.add_argument("--beam_size", type=int, default=None,
                        help="beam size, >= 1 (default: the checkpoint's decoding settings, as EVALUATE=1)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--json", default=None, help="also write {file: caption} to this JSON file")
    parser.add_argument("--max_image_pixels", type=int, default=Image.MAX_IMAGE_PIXELS,
                        help="largest image (width x height) read; larger ones are refused as decompression bombs")
    args = parser.parse_args(argv)
    if args.beam_size is not None:
        at_least(1, "--beam_size", args.beam_size)
    at_least(1, "--max_image_pixels", args.max_image_pixels)
    Image.MAX_IMAGE_PIXELS = args.max_image_pixels
    files = expand(args.images)
    captioner = Captioner.from_checkpoint(args.ckpt, args.clip_model, args.resolution, args.beam_size, args.device)
    captions = captioner.caption(files, progress=len(files) > 1)
    for f, c in zip(files, captions):
        print(f"{f}\t{c}")
    if args.json:
        write_json(args.json, {str(f): c for f, c in zip(files, captions)}, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
