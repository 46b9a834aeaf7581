"""Train or evaluate the captioner (see ``captioning/training/run.py`` for the options).

    python tools/train_pl.py --cfg configs/phase1/clipRN50_mle.yml --id clipRN50_mle
    EVALUATE=1 python tools/train_pl.py --cfg configs/phase1/clipRN50_mle.yml --id clipRN50_mle
"""
import sys

from captioning.training.run import main

if __name__ == "__main__":
    sys.exit(main())
