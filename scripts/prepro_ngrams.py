"""Document frequencies of the references of one split, for the CIDEr-D reward.

    python scripts/prepro_ngrams.py --input_json data/dataset_coco.json \
        --dict_json data/cocotalk.json --output_pkl data/coco-train --split train

writes <output_pkl>-words.p and <output_pkl>-idxs.p, pickles of
{'document_frequency': {ngram tuple: df}, 'ref_len': number of images} (docs/ORIGINAL.md §1.3).
The SCST reward reads the index variant (config key cached_tokens, default coco-train-idxs).
"""
from __future__ import annotations

import sys
import time

from captioning.cli import ArgumentParser, entry_point
from captioning.data.prepro import prepro_ngrams


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--input_json", required=True, help="Karpathy-format data set JSON")
    parser.add_argument("--dict_json", required=True, help="output of prepro_labels.py (ix_to_word)")
    parser.add_argument("--output_pkl", required=True, help="prefix of the two pickles")
    parser.add_argument("--split", default="train", choices=["train", "val", "test", "all"],
                        help="references to count; train includes restval")
    args = parser.parse_args(argv)
    start = time.time()
    n = prepro_ngrams(args.input_json, args.dict_json, args.output_pkl, args.split)
    print(f"document frequencies of {n} images ({args.split}) in {time.time() - start:.1f}s: "
          f"{args.output_pkl}-words.p, {args.output_pkl}-idxs.p")
    return 0


if __name__ == "__main__":
    sys.exit(main())
