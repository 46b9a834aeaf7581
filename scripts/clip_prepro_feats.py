"""CLIP grid features for the captioner (reference §1.4); see captioning/data/extract.py.

    python scripts/clip_prepro_feats.py --input_json data/dataset_coco.json --output_dir data/cocotalk \
        --images_root datasets/COCO/images --model_type RN50
"""
import sys

from captioning.data.extract import grid_main

if __name__ == "__main__":
    sys.exit(grid_main())
