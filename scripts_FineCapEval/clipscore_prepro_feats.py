"""CLIP-S image embeddings of FineCapEval images (docs/ORIGINAL.md §1.6): ids are file stems.

    python scripts_FineCapEval/clipscore_prepro_feats.py --input_json data/FineCapEval.json \
        --output_dir data/FineCapEval --images_root datasets/FineCapEval/images
"""
import sys

from captioning.data.extract import clipscore_main


def main(argv: list[str] | None = None) -> int:
    """Extract; a bad input ends with one ``error:`` line and exit status 2."""
    return clipscore_main(argv, finecapeval=True)


if __name__ == "__main__":
    sys.exit(main())
