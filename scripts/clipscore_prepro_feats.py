"""L2-normalised CLIP-S image embeddings (docs/ORIGINAL.md §1.5); see captioning/data/extract.py.

    python scripts/clipscore_prepro_feats.py --input_json data/dataset_coco.json --output_dir data/cocotalk \
        --images_root datasets/COCO/images
"""
import sys

from captioning.data.extract import clipscore_main


def main(argv: list[str] | None = None) -> int:
    """Extract; a bad input ends with one ``error:`` line and exit status 2."""
    return clipscore_main(argv)


if __name__ == "__main__":
    sys.exit(main())
