"""Write a report of any runs: the paper-style table, a caption grid and the training curves.

    python tools/make_report.py                                  # the five FineShapes demo runs -> demo/
    python tools/make_report.py --runs clipRN50_mle,clipRN50_clips --labels MLE,CLIP-S --split test \\
        --dataset_json data/dataset_coco.json --images_root datasets/COCO/images --scenes none \\
        --clip_model ViT-B/32 --clipscore_features data/cocotalk_clipscore_vis --grammar_clip none --out_dir report

Reads ``eval_results/<id>_<split>.json`` (required), ``eval_results/<id>_<split>_retrieval.json``,
``FineCapEval_results/<id>_finecapeval.json`` and ``save/<id>/logs`` of every run; a missing
optional input leaves its columns empty. CLIP-S, RefCLIP-S, the grammar score and, with
FineShapes scenes, the exact truth metrics are computed the same way for every model. ``none``
switches an optional input off.
"""
from __future__ import annotations

import sys
from pathlib import Path

from captioning.cli import ArgumentParser, entry_point
from captioning.evaluation.report import ReportInputs, build_report
from captioning.fineshapes.demo_runs import DEMO_RUNS


def _optional(value: str | None) -> str | None:
    return None if value is None or value.lower() == "none" else value


def _seed_reports(text: str) -> tuple[tuple[int, str], ...]:
    """``SEED:PATH,...`` as (seed, path) pairs."""
    out = []
    for item in filter(None, text.split(",")):
        seed, sep, path = item.partition(":")
        if not sep or not seed.isdigit() or not path:
            raise ValueError(f"--seed_reports takes SEED:PATH items, got {item!r}")
        out.append((int(seed), path))
    return tuple(out)


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--runs", default=",".join(run_id for _, run_id, _ in DEMO_RUNS),
                        help="comma-separated run ids (default: the five demo runs)")
    parser.add_argument("--labels", default=None, help="comma-separated row labels (default: the run ids, or the "
                                                       "demo's labels for its runs)")
    parser.add_argument("--split", default="test", help="the split the runs were evaluated on")
    parser.add_argument("--dataset_json", default="data/dataset_fineshapes.json", help="Karpathy JSON (references)")
    parser.add_argument("--images_root", default="datasets/FineShapes", help="root of its image paths (caption grid)")
    parser.add_argument("--scenes", default="data/fineshapes_scenes.json", help="FineShapes truth, or none")
    parser.add_argument("--clip_model", default="retrieval/pretrained/fineshapes_clip.pt", help="CLIP for CLIP-S")
    parser.add_argument("--clipscore_features", default="data/fineshapes_clipscore_vis.npy",
                        help="CLIP-S image embeddings of the split (none: the results files' CLIP-S)")
    parser.add_argument("--grammar_clip", default="retrieval/save/fineshapes_grammar/fineshapes_grammar.pt",
                        help="grammar CLIP for the grammar score, or none")
    parser.add_argument("--timings", default=None, help="stage times to include (demo/timings.json)")
    parser.add_argument("--title", default=None, help="report title")
    parser.add_argument("--out_dir", default="demo", help="where report.md, report.json and the figures go")
    parser.add_argument("--seed_reports", default="",
                        help="SEED:PATH,... report.json files of the same runs trained with other seeds; the "
                             "report adds mean ± sd per cell and per claim the seeds it held in")
    args = parser.parse_args(argv)
    try:
        other_seeds = _seed_reports(args.seed_reports)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_ids = [r for r in args.runs.split(",") if r]
    demo_labels = {run_id: label for label, run_id, _ in DEMO_RUNS}
    labels = args.labels.split(",") if args.labels else [demo_labels.get(r, r) for r in run_ids]
    if not run_ids or len(labels) != len(run_ids) or len(set(labels)) != len(labels):
        print(f"error: --labels needs one distinct label per run ({len(run_ids)} runs, {len(labels)} labels)",
              file=sys.stderr)
        return 2
    scenes = _optional(args.scenes)
    grammar = _optional(args.grammar_clip)
    title = args.title or ("FineShapes reproduction of *Fine-grained Image Captioning with CLIP Reward*"
                           if scenes else f"Captioning report: {', '.join(labels)} ({args.split})")
    inputs = ReportInputs(runs=tuple(zip(labels, run_ids)), dataset_json=args.dataset_json, scenes_json=scenes,
                          clip_model=_optional(args.clip_model), clipscore_features=_optional(args.clipscore_features),
                          grammar_clip=grammar, images_root=args.images_root, timings_json=_optional(args.timings),
                          split=args.split, title=title)
    for path in (args.dataset_json, scenes, grammar, inputs.clipscore_features, *(p for _, p in other_seeds)):
        if path and not Path(path).exists():
            print(f"error: report input missing: {path} (pass none to go without it, where optional)", file=sys.stderr)
            return 2
    try:
        path = build_report(inputs, args.out_dir, other_seeds)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
