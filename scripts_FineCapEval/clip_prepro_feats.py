"""CLIP grid features of FineCapEval images (reference §1.6): ids are file stems.

    python scripts_FineCapEval/clip_prepro_feats.py --input_json data/FineCapEval.json \
        --output_dir data/FineCapEval --images_root datasets/FineCapEval/images --model_type RN50
"""
import sys

from captioning.data.extract import grid_main

if __name__ == "__main__":
    sys.exit(grid_main(finecapeval=True))
