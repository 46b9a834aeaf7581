"""Karpathy-format JSON -> vocabulary + image list (JSON) and encoded captions (HDF5).

    python scripts/prepro_labels.py --input_json data/dataset_coco.json \
        --output_json data/cocotalk.json --output_h5 data/cocotalk

Faithful to the original (docs/ORIGINAL.md §1.2): the vocabulary holds the words seen more than
--word_count_threshold times over all splits, in first-occurrence order, with UNK last; captions
are truncated to --max_length tokens; <output_h5>_label.h5 holds uint32 labels,
label_start_ix / label_end_ix (1-based, inclusive) and label_length.
"""
from __future__ import annotations

import sys
import time

from captioning.cli import ArgumentParser, entry_point
from captioning.data.prepro import prepro_labels


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_json", required=True, help="Karpathy-format data set JSON")
    parser.add_argument("--output_json", default="data.json", help="vocabulary and image list")
    parser.add_argument("--output_h5", default="data", help="prefix of the label file (<prefix>_label.h5)")
    parser.add_argument("--images_root", default="", help="if given, image sizes are added to the JSON")
    parser.add_argument("--max_length", type=int, default=16, help="captions are truncated to this many words")
    parser.add_argument("--word_count_threshold", type=int, default=5,
                        help="words seen at most this many times become UNK")
    args = parser.parse_args(argv)
    start = time.time()
    stats = prepro_labels(args.input_json, args.output_json, args.output_h5, args.images_root,
                          args.max_length, args.word_count_threshold)
    print(f"{stats['n_images']} images, {stats['n_captions']} captions, vocabulary of {stats['vocab_size']} words "
          f"in {time.time() - start:.1f}s: {args.output_json}, {args.output_h5}_label.h5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
