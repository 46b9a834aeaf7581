"""Score generated captions on FineCapEval (or FineShapesEval).

    python tools/eval_finecapeval.py --generated_id2caption FineCapEval_results/clipRN50_mle.json

Prints and saves: background / object / relation scores with the original's rule (stemmed
reference words found as substrings of the raw caption), the same at token level, their means
("overall"), and the caption metrics against the CSV captions. With --scenes (FineShapesEval),
also the exact truth metrics.
"""
from __future__ import annotations

import sys

from captioning.cli import ArgumentParser, entry_point
from captioning.evaluation.finecapeval import evaluate_finecapeval


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--finecapeval_path", default="data/FineCapEval.csv", help="the FineCapEval CSV")
    parser.add_argument("--generated_id2caption", required=True, help="JSON {image id: caption}")
    parser.add_argument("--output", default=None, help="result JSON (default: <generated>_finecapeval.json)")
    parser.add_argument("--scenes", default=None, help="FineShapes scene file for exact truth metrics")
    parser.add_argument("--no_caption_metrics", action="store_true", help="skip BLEU/METEOR/ROUGE/CIDEr")
    args = parser.parse_args(argv)
    r = evaluate_finecapeval(args.finecapeval_path, args.generated_id2caption, args.output, args.scenes,
                             not args.no_caption_metrics)
    c = r["criteria"]
    print(f"{int(c['n_images'])} images ({r['n_rows_skipped']} of {r['n_rows']} CSV rows skipped: empty fields)")
    for name in ("background", "object", "relation", "overall"):
        print(f"{name:<11} Acc: {c[name]:6.2f}   token-level: {c[name + '_token']:6.2f}")
    if "caption" in r:
        print("caption    " + "  ".join(f"{k} {v:.3f}" for k, v in r["caption"].items() if isinstance(v, float)))
    if "truth" in r:
        t = r["truth"]
        print(f"truth      parse rate {t['parse_rate']:.3f}  precision {t['precision_all']:.3f}  recall {t['recall_all']:.3f}")
    print(f"-> {r['output_path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
