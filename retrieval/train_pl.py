"""Train or evaluate a retrieval CLIP (see ``retrieval/run.py`` for the tasks and options).

    python retrieval/train_pl.py --cfg clip_negative_text --id clip_negative_text
    EVALUATE=1 python retrieval/train_pl.py --cfg clip_negative_text --id clip_negative_text
"""
import sys

from retrieval.run import main

if __name__ == "__main__":
    sys.exit(main())
