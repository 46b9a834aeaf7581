"""CLIP grid features for the captioner (docs/ORIGINAL.md §1.4); see captioning/data/extract.py.

    python scripts/clip_prepro_feats.py --input_json data/dataset_coco.json --output_dir data/cocotalk \
        --images_root datasets/COCO/images --model_type RN50
"""
import sys

from captioning.data.extract import grid_main


def main(argv: list[str] | None = None) -> int:
    """Extract; a bad input ends with one ``error:`` line and exit status 2."""
    return grid_main(argv)


if __name__ == "__main__":
    sys.exit(main())
