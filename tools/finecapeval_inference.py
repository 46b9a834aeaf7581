"""Caption the FineCapEval images with a trained captioner.

    python tools/finecapeval_inference.py --reward mle        # clips, cider, cider_clips, clips_grammar
    python tools/finecapeval_inference.py --cfg CFG --ckpt CKPT --id NAME [--input_json J --input_att_dir D]

--reward uses configs/phase{1,2}/FineCapEval_clipRN50_<reward>.yml and the checkpoint
save/clipRN50_<reward>/clipRN50_<reward>-last.ckpt (the README's "clips_cider" is accepted for
cider_clips). Writes FineCapEval_results/<id>.json = {image id: caption}; score it with
tools/eval_finecapeval.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

from captioning.cli import ArgumentParser, at_least, entry_point
from captioning.config import ConfigError, load_config
from captioning.evaluation.inference import caption_split
from captioning.utils.io import write_json

REWARDS = ("mle", "cider", "clips", "cider_clips", "clips_grammar")
ALIASES = {"clips_cider": "cider_clips"}


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--reward", choices=REWARDS + tuple(ALIASES), help="one of the released COCO models")
    parser.add_argument("--cfg", help="a config (instead of --reward)")
    parser.add_argument("--ckpt", help="checkpoint (default: <checkpoint_path>/<id>-last.ckpt)")
    parser.add_argument("--id", help="run name for the output file")
    parser.add_argument("--input_json", help="override the config's input_json (FineCapEval-format JSON)")
    parser.add_argument("--input_att_dir", help="override the config's grid features")
    parser.add_argument("--output_dir", default="FineCapEval_results", help="where <id>.json is written")
    parser.add_argument("--batch_size", type=int, default=40, help="images decoded together (>= 1)")
    args = parser.parse_args(argv)
    at_least(1, "--batch_size", args.batch_size)
    if bool(args.reward) == bool(args.cfg):
        parser.error("give exactly one of --reward and --cfg")
    if args.reward:
        reward = ALIASES.get(args.reward, args.reward)
        phase = "phase1" if reward == "mle" else "phase2"
        cfg_path = Path("configs") / phase / f"FineCapEval_clipRN50_{reward}.yml"
        run_id = args.id or f"clipRN50_{reward}"
    else:
        cfg_path, run_id = Path(args.cfg), args.id
        if not run_id:
            parser.error("--cfg needs --id")
    overrides = {k: v for k, v in (("input_json", args.input_json), ("input_att_dir", args.input_att_dir)) if v}
    try:
        cfg = load_config(cfg_path, overrides=overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ckpt = args.ckpt or str(Path(cfg.train.checkpoint_path or Path("save") / run_id) / f"{run_id}-last.ckpt")
    try:
        captions = caption_split(cfg, ckpt, "test", args.batch_size)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.output_dir) / f"{run_id}.json"
    write_json(out, captions, indent=1)
    print(f"{len(captions)} captions -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
