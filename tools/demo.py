"""The main job: the whole FineShapes pipeline, stage by stage (``make demo``).

world -> labels and n-grams -> tiny CLIP -> features -> grammar CLIP -> MLE -> four SCST runs ->
test evaluation of the five models -> ``demo/report.md``.

Each stage is the command a user would type. A stage whose outputs all exist is skipped,
unless ``--force`` is given or an earlier stage ran in this invocation (its inputs changed).
A failing stage stops the run with its exit status; finished stages stay as they are. The
tiny CLIP ships with the repository (``retrieval/pretrained/fineshapes_clip.pt``);
``--retrain_clip`` trains it again from scratch. Stage times go to ``demo/timings.json``.
``--smoke`` runs every stage on a tiny world with a handful of steps each (about two minutes):
a quick end-to-end check of an installation, not a result.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from captioning.cli import ArgumentParser, entry_point
from captioning.fineshapes.demo_runs import DEMO_RUNS as RUNS
from captioning.utils.io import write_json

PY = sys.executable
CLIP = "retrieval/pretrained/fineshapes_clip.pt"
GRAMMAR = "retrieval/save/fineshapes_grammar/fineshapes_grammar.pt"
MLE_CKPT = "save/fineshapes_mle/fineshapes_mle-last.ckpt"


@dataclass(frozen=True)
class Stage:
    name: str
    command: list[str]
    outputs: list[str]
    scratch: tuple[str, ...] = ()  # folders of the stage's own, emptied before it runs

    def done(self) -> bool:
        return all(Path(p).exists() for p in self.outputs)

    def clear(self) -> None:
        """Remove the outputs (and a packed store's index and parts), so a re-run recomputes them."""
        for folder in map(Path, self.scratch):
            if folder.is_dir():
                shutil.rmtree(folder)
        for out in map(Path, self.outputs):
            extra = [out.with_suffix(".json"), out.with_name(out.name + ".parts")] if out.suffix == ".npy" else []
            for p in (out, *extra):
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()


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


SMOKE_WORLD = ["--n_train", "60", "--n_restval", "0", "--n_val", "10", "--n_test", "10", "--n_eval", "10"]
SMOKE_TRAIN = ["--batch_size", "10", "--max_epochs", "1", "--language_eval", "0"]
SMOKE_GRAMMAR = ["--epochs", "1", "--batch_size", "20", "--valid_batch_size", "10"]


def model_stages(label: str, run_id: str, cfg: str, smoke: bool = False) -> list[Stage]:
    ckpt = f"save/{run_id}/{run_id}-last.ckpt"
    train = [PY, "tools/train_pl.py", "--cfg", cfg, "--id", run_id] + (SMOKE_TRAIN if smoke else [])
    if run_id != "fineshapes_mle":
        train += ["--init_from", MLE_CKPT] + (["--limit_train_batches", "2"] if smoke else [])
    return [
        Stage(f"train {label}", train, [ckpt], scratch=(f"save/{run_id}",)),
        Stage(f"test {label}", [PY, "tools/train_pl.py", "--cfg", cfg, "--id", run_id, "--evaluate",
                                *(["--batch_size", "10"] if smoke else [])],
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


def stages(retrain_clip: bool, smoke: bool = False) -> list[Stage]:
    out = [
        Stage("world", [PY, "scripts/make_fineshapes.py", "--seed", "123", *(SMOKE_WORLD if smoke else [])],
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
                                       "fineshapes_clip", "--export_path", CLIP], [CLIP],
                         scratch=("retrieval/save/fineshapes_clip",)))
    out += feature_stages()
    out.append(Stage("grammar CLIP", [PY, "retrieval/train_pl.py", "--cfg", "fineshapes_grammar", "--id",
                                      "fineshapes_grammar", "--input_clipscore_vis_dir",
                                      "data/fineshapes_clipscore_vis.npy", *(SMOKE_GRAMMAR if smoke else [])],
                     [GRAMMAR], scratch=("retrieval/save/fineshapes_grammar",)))
    for label, run_id, cfg in RUNS:
        out += model_stages(label, run_id, cfg, smoke)
    out.append(Stage("report", [PY, "tools/make_report.py", "--runs", ",".join(run_id for _, run_id, _ in RUNS),
                            "--labels", ",".join(label for label, _, _ in RUNS), "--timings", "demo/timings.json"],
                     ["demo/report.md"]))
    return out


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="re-run stages whose outputs exist")
    parser.add_argument("--retrain_clip", action="store_true", help="train the tiny CLIP from scratch")
    parser.add_argument("--smoke", action="store_true", help="a tiny world and a few steps per stage (a quick check)")
    args = parser.parse_args(argv)
    timings_path = Path("demo/timings.json")
    timings: dict[str, float] = {}
    if timings_path.is_file() and not args.force:
        timings = json.loads(timings_path.read_text()).get("stages_s", {})
    rerun = args.force
    start = time.time()
    for stage in stages(args.retrain_clip, args.smoke):
        if stage.done() and not rerun:
            print(f"[demo] {stage.name}: outputs exist, skipped (FORCE=1 re-runs)", flush=True)
            continue
        print(f"[demo] {stage.name}: {' '.join('python' if c == PY else c for c in stage.command)}", flush=True)
        stage.clear()
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
