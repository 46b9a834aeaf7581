"""Write demo/report.md: the FineShapes reproduction of the paper's table, with captions and curves.

    python tools/make_report.py

Reads the results of the five demo runs (see tools/demo.py) and computes CLIP-S, RefCLIP-S, the
grammar score and the exact truth metrics the same way for every model.
"""
from __future__ import annotations

import sys

from captioning.cli import ArgumentParser, entry_point
from captioning.evaluation.report import ReportInputs, build_report

RUNS = (("MLE", "fineshapes_mle"), ("CIDEr", "fineshapes_cider"), ("CLIP-S", "fineshapes_clips"),
        ("CLIP-S+CIDEr", "fineshapes_cider_clips"), ("CLIP-S+Grammar", "fineshapes_clips_grammar"))


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--clip_model", default="retrieval/pretrained/fineshapes_clip.pt",
                        help="the CLIP for CLIP-S and retrieval (a name or file clip.load reads)")
    parser.add_argument("--grammar_clip", default="retrieval/save/fineshapes_grammar/fineshapes_grammar.pt",
                        help="the grammar CLIP for the grammar score")
    parser.add_argument("--out_dir", default="demo", help="where report.md and its figures go")
    args = parser.parse_args(argv)
    inputs = ReportInputs(runs=RUNS, dataset_json="data/dataset_fineshapes.json",
                          scenes_json="data/fineshapes_scenes.json", clip_model=args.clip_model,
                          clipscore_features="data/fineshapes_clipscore_vis.npy", grammar_clip=args.grammar_clip)
    path = build_report(inputs, args.out_dir)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
