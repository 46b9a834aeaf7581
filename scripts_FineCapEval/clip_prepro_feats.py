"""CLIP grid features of FineCapEval images (docs/ORIGINAL.md §1.6): ids are file stems.

    python scripts_FineCapEval/clip_prepro_feats.py --input_json data/FineCapEval.json \
        --output_dir data/FineCapEval --images_root datasets/FineCapEval/images --model_type RN50
"""
import sys

from captioning.data.extract import grid_main


def main(argv: list[str] | None = None) -> int:
    """Extract; a bad input ends with one ``error:`` line and exit status 2."""
    return grid_main(argv, finecapeval=True)


if __name__ == "__main__":
    sys.exit(main())
