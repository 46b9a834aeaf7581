"""Write demo/report.md: the FineShapes reproduction of the paper's table, with captions and curves.

    python tools/make_report.py

Reads the results of the five demo runs (see tools/demo.py) and computes CLIP-S, RefCLIP-S, the
grammar score and the exact truth metrics the same way for every model.
"""
from __future__ import annotations

import argparse
import sys

from captioning.evaluation.report import ReportInputs, build_report

RUNS = (("MLE", "fineshapes_mle"), ("CIDEr", "fineshapes_cider"), ("CLIP-S", "fineshapes_clips"),
        ("CLIP-S+CIDEr", "fineshapes_cider_clips"), ("CLIP-S+Grammar", "fineshapes_clips_grammar"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip_model", default="retrieval/pretrained/fineshapes_clip.pt")
    parser.add_argument("--grammar_clip", default="retrieval/save/fineshapes_grammar/fineshapes_grammar.pt")
    parser.add_argument("--out_dir", default="demo")
    args = parser.parse_args(argv)
    inputs = ReportInputs(runs=RUNS, dataset_json="data/dataset_fineshapes.json",
                          scenes_json="data/fineshapes_scenes.json", clip_model=args.clip_model,
                          clipscore_features="data/fineshapes_clipscore_vis.npy", grammar_clip=args.grammar_clip)
    try:
        path = build_report(inputs, args.out_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
