"""Text-to-image retrieval with CLIP for generated captions (or, with --gt, the first reference).

    python tools/eval_clip_retrieval.py --gen_caption_path eval_results/clipRN50_mle_test.json \
        --clip_model ViT-B/32 --image_features data/cocotalk_clipscore_vis

Image embeddings come from CLIP-S features made with the same CLIP (--image_features), or from the
images (--input_json with --images_root). Writes eval_results/<id>_test_retrieval.json.
"""
from __future__ import annotations

import argparse
import sys

from captioning.cli import ArgumentParser, InputError, entry_point
from captioning.evaluation.retrieval import run


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--gen_caption_path", default=None, help="results JSON (imgToEval) or {id: caption}")
    parser.add_argument("--gt", action="store_true", help="evaluate the first ground-truth caption of each test image")
    parser.add_argument("--clip_model", default="ViT-B/32", help="a CLIP name or file (clip.load)")
    parser.add_argument("--image_features", default=None, help="CLIP-S image features (folder or packed .npy)")
    parser.add_argument("--input_json", default=None, help="Karpathy JSON (for --gt, or to find image files)")
    parser.add_argument("--images_root", default=None, help="root of the image paths in --input_json")
    parser.add_argument("--output", default=None, help="result JSON (default: <results>_retrieval.json)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--coco_root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.coco_root:
        parser.error("--coco_root is not used (the original ignored it too); give --input_json and --images_root")
    if not args.gt and not args.gen_caption_path:
        raise InputError("give --gen_caption_path (generated captions) or --gt (the first reference of each image)")
    r = run(args.gen_caption_path, args.gt, args.clip_model, args.image_features, args.input_json, args.images_root,
            args.output, args.device)
    for direction in ("t2i", "i2t"):
        m = r[direction]
        print(f"{direction}: R@1 {m['R@1']:.2f}  R@5 {m['R@5']:.2f}  R@10 {m['R@10']:.2f}  R@50 {m['R@50']:.2f}  "
              f"medr {m['medr']:.0f}  meanr {m['meanr']:.1f}  ({r['n']} pairs)")
    print(f"-> {r['output_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
