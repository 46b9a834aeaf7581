"""The main job: the whole FineShapes pipeline, stage by stage (``make demo``).

world -> labels and n-grams -> tiny CLIP -> features -> grammar CLIP -> MLE -> four SCST runs ->
test evaluation of the five models -> ``demo/report.md``.

Each stage is the command a user would type. A stage whose outputs all exist is skipped,
unless ``--force`` is given or an earlier stage ran in this invocation (its inputs changed).
A failing stage stops the run with its exit status; finished stages stay as they are. The
tiny CLIP ships with the repository (``retrieval/pretrained/fineshapes_clip.pt``);
``--retrain_clip`` trains it again from scratch. Stage times go to ``demo/timings.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from captioning.utils.io import write_json

PY = sys.executable
CLIP = "retrieval/pretrained/fineshapes_clip.pt"
GRAMMAR = "retrieval/save/fineshapes_grammar/fineshapes_grammar.pt"
RUNS = (("MLE", "fineshapes_mle", "configs/phase1/fineshapes_mle.yml"),
        ("CIDEr", "fineshapes_cider", "configs/phase2/fineshapes_cider.yml"),
        ("CLIP-S", "fineshapes_clips", "configs/phase2/fineshapes_clips.yml"),
        ("CLIP-S+CIDEr", "fineshapes_cider_clips", "configs/phase2/fineshapes_cider_clips.yml"),
        ("CLIP-S+Grammar", "fineshapes_clips_grammar", "configs/phase2/fineshapes_clips_grammar.yml"))
MLE_CKPT = "save/fineshapes_mle/fineshapes_mle-last.ckpt"


@dataclass(frozen=True)
class Stage:
    name: str
    command: list[str]
    outputs: list[str]

    def done(self) -> bool:
        return all(Path(p).exists() for p in self.outputs)


def feature_stages() -> list[Stage]:
    common = ["--images_root", "datasets/FineShapes", "--clip_model", CLIP, "--format", "packed",
              "--batch_size", "32", "--num_workers", "1", "--quiet"]
    grid = ["--model_type", "tinyRN", "--resolution", "128"]
    return [
        Stage("grid features", [PY, "scripts/clip_prepro_feats.py", "--input_json", "data/dataset_fineshapes.json",
                                "--output_dir", "data/fineshapes", *grid, *common],
              ["data/fineshapes_clip_tinyRN_att.npy"]),
        Stage("eval grid features", [PY, "scripts_FineCapEval/clip_prepro_feats.py", "--input_json",
                                     "data/FineShapesEval.json", "--output_dir", "data/FineShapesEval", *grid, *common],
              ["data/FineShapesEval_clip_tinyRN_att.npy"]),
        Stage("CLIP-S features", [PY, "scripts/clipscore_prepro_feats.py", "--input_json",
                                  "data/dataset_fineshapes.json", "--output_dir", "data/fineshapes", *common],
              ["data/fineshapes_clipscore_vis.npy"]),
        Stage("eval CLIP-S features", [PY, "scripts_FineCapEval/clipscore_prepro_feats.py", "--input_json",
                                       "data/FineShapesEval.json", "--output_dir", "data/FineShapesEval", *common],
              ["data/FineShapesEval_clipscore_vis.npy"]),
    ]


def model_stages(label: str, run_id: str, cfg: str) -> list[Stage]:
    ckpt = f"save/{run_id}/{run_id}-last.ckpt"
    train = [PY, "tools/train_pl.py", "--cfg", cfg, "--id", run_id]
    if run_id != "fineshapes_mle":
        train += ["--init_from", MLE_CKPT]
    return [
        Stage(f"train {label}", train, [ckpt]),
        Stage(f"test {label}", [PY, "tools/train_pl.py", "--cfg", cfg, "--id", run_id, "--evaluate"],
              [f"eval_results/{run_id}_test.json"]),
        Stage(f"retrieval {label}", [PY, "tools/eval_clip_retrieval.py", "--gen_caption_path",
                                     f"eval_results/{run_id}_test.json", "--clip_model", CLIP,
                                     "--image_features", "data/fineshapes_clipscore_vis.npy"],
              [f"eval_results/{run_id}_test_retrieval.json"]),
        Stage(f"FineShapesEval {label}", [PY, "tools/finecapeval_inference.py", "--cfg", cfg, "--ckpt", ckpt,
                                          "--id", run_id, "--input_json", "data/FineShapesEval.json",
                                          "--input_att_dir", "data/FineShapesEval_clip_tinyRN_att.npy"],
              [f"FineCapEval_results/{run_id}.json"]),
        Stage(f"FineShapesEval score {label}", [PY, "tools/eval_finecapeval.py", "--finecapeval_path",
                                                "data/FineShapesEval.csv", "--generated_id2caption",
                                                f"FineCapEval_results/{run_id}.json", "--scenes",
                                                "data/fineshapes_scenes.json"],
              [f"FineCapEval_results/{run_id}_finecapeval.json"]),
    ]


def stages(retrain_clip: bool) -> list[Stage]:
    out = [
        Stage("world", [PY, "scripts/make_fineshapes.py", "--seed", "123"],
              ["data/dataset_fineshapes.json", "data/FineShapesEval.json", "data/FineShapesEval.csv",
               "data/fineshapes_scenes.json"]),
        Stage("labels", [PY, "scripts/prepro_labels.py", "--input_json", "data/dataset_fineshapes.json",
                         "--output_json", "data/fineshapes.json", "--output_h5", "data/fineshapes"],
              ["data/fineshapes.json", "data/fineshapes_label.h5"]),
        Stage("ngrams", [PY, "scripts/prepro_ngrams.py", "--input_json", "data/dataset_fineshapes.json",
                         "--dict_json", "data/fineshapes.json", "--output_pkl", "data/fineshapes-train",
                         "--split", "train"],
              ["data/fineshapes-train-words.p", "data/fineshapes-train-idxs.p"]),
    ]
    if retrain_clip:
        out.append(Stage("tiny CLIP", [PY, "retrieval/train_pl.py", "--cfg", "fineshapes_clip", "--id",
                                       "fineshapes_clip", "--export_path", CLIP], [CLIP]))
    out += feature_stages()
    out.append(Stage("grammar CLIP", [PY, "retrieval/train_pl.py", "--cfg", "fineshapes_grammar", "--id",
                                      "fineshapes_grammar", "--input_clipscore_vis_dir",
                                      "data/fineshapes_clipscore_vis.npy"], [GRAMMAR]))
    for label, run_id, cfg in RUNS:
        out += model_stages(label, run_id, cfg)
    out.append(Stage("report", [PY, "tools/make_report.py"], ["demo/report.md"]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="re-run stages whose outputs exist")
    parser.add_argument("--retrain_clip", action="store_true", help="train the tiny CLIP from scratch")
    args = parser.parse_args(argv)
    timings_path = Path("demo/timings.json")
    timings: dict[str, float] = {}
    if timings_path.is_file() and not args.force:
        timings = json.loads(timings_path.read_text()).get("stages_s", {})
    rerun = args.force
    start = time.time()
    for stage in stages(args.retrain_clip):
        if stage.done() and not rerun:
            print(f"[demo] {stage.name}: outputs exist, skipped (FORCE=1 re-runs)", flush=True)
            continue
        print(f"[demo] {stage.name}: {' '.join('python' if c == PY else c for c in stage.command)}", flush=True)
        t0 = time.time()
        result = subprocess.run(stage.command)
        if result.returncode != 0:
            print(f"[demo] stage {stage.name!r} failed with exit status {result.returncode}; "
                  "earlier stages are kept, fix the error and run `make demo` again", file=sys.stderr)
            return result.returncode
        timings[stage.name] = round(time.time() - t0, 2)
        rerun = True
        _write_timings(timings_path, timings)
    print(f"[demo] done in {time.time() - start:.1f}s; total of recorded stage times "
          f"{sum(timings.values()):.1f}s; report: demo/report.md")
    return 0


def _write_timings(path: Path, timings: dict[str, float]) -> None:
    write_json(path, {"stages_s": timings, "total_s": round(sum(timings.values()), 2)}, indent=2)


if __name__ == "__main__":
    sys.exit(main())
