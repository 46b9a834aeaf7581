"""The main job: the whole FineShapes pipeline, stage by stage (``make demo``).

world -> labels and n-grams -> tiny CLIP -> features -> grammar CLIP -> MLE -> four SCST runs ->
test evaluation of the five models -> ``demo/report.md``.

Each stage is the command a user would type. A stage whose outputs all exist is skipped, unless
``--force`` is given, a stage it depends on ran in this invocation (its inputs changed), or the
outputs were made by another command or config: each finished stage's signature (its command and the
contents of its ``--cfg`` file with that file's ``_BASE_`` chain) is kept in ``demo/stages.json``, and
outputs without a matching signature are made again. Code changes are not tracked: after updating
the code, ``make demo FORCE=1``.
``--seeds N`` repeats the training stages (MLE, the four SCST runs and their evaluation) with N
seeds on the same world: seed 0 is the single-seed demo, seed s trains runs ``<id>_s<s>`` with the
config's seed + s and reports to ``demo/seed<s>/``; ``demo/report.md`` and ``report.json`` then add
mean ± sd per cell and, per claim, the seeds it held in. A seed's stages depend on the shared
stages and on that seed's earlier stages only, so finished seeds are skipped on a re-run.
A failing stage stops the run with its exit status; finished stages stay as they are. The
tiny CLIP ships with the repository (``retrieval/pretrained/fineshapes_clip.pt``);
``--retrain_clip`` trains it again from scratch. Stage times go to ``demo/timings.json``.
``--smoke`` runs every stage on a tiny world with a handful of steps each (about two minutes):
a quick end-to-end check of an installation, not a result.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from captioning.cli import ArgumentParser, at_least, entry_point
from captioning.config import TrainConfig, config_files
from captioning.fineshapes.demo_runs import DEMO_RUNS as RUNS
from captioning.utils.io import write_json
from retrieval.config import config_path

PY = sys.executable
CLIP = "retrieval/pretrained/fineshapes_clip.pt"
GRAMMAR = "retrieval/save/fineshapes_grammar/fineshapes_grammar.pt"
STAMPS = Path("demo/stages.json")


@dataclass(frozen=True)
class Stage:
    name: str
    command: list[str]
    outputs: list[str]
    scratch: tuple[str, ...] = ()  # folders of the stage's own, emptied before it runs
    current: Callable[[], bool] | None = None  # whether existing outputs fit this invocation (default: yes)
    group: str | None = None  # a seed's stages: they depend on earlier shared stages and their group only

    def outputs_exist(self) -> bool:
        return all(Path(p).exists() for p in self.outputs)

    def done(self, stamps: dict[str, str]) -> bool:
        """Whether the outputs exist and were made by this command and config (``stamps``: the
        signatures recorded in ``demo/stages.json``)."""
        return (self.outputs_exist() and stamps.get(self.name) == self.signature()
                and (self.current is None or self.current()))

    def signature(self) -> str:
        """A hash of the command (the interpreter left out) and of the contents of every config file it
        reads (``--cfg``, resolved as the trainers resolve it, and its ``_BASE_`` chain)."""
        files = {}
        for flag, value in zip(self.command, self.command[1:]):
            if flag == "--cfg":
                for file in config_files(config_path(value)):
                    files[os.path.relpath(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
        text = json.dumps([["python" if c == PY else c for c in self.command], sorted(files.items())])
        return hashlib.sha256(text.encode()).hexdigest()

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
    grid = ["--model_type", "tinyRN", "--resolution", "96"]
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


def seed_runs(seed: int) -> list[tuple[str, str, str]]:
    """The demo's (label, run id, config) for seed index ``seed``: 0 keeps the ids, s > 0 uses ``<id>_s<s>``."""
    return [(label, run_id if seed == 0 else f"{run_id}_s{seed}", cfg) for label, run_id, cfg in RUNS]


def seed_report_dir(seed: int) -> str:
    """Where the report of seed index ``seed`` goes (seed 0: the demo's report)."""
    return "demo" if seed == 0 else f"demo/seed{seed}"


def model_stages(label: str, run_id: str, cfg: str, smoke: bool = False, seed: int = 0,
                 init_from: str | None = None) -> list[Stage]:
    """Train (from ``init_from``, the MLE weights, for SCST), test, retrieval and FineShapesEval of one run.

    Seed index 0 runs the configs as they are; s > 0 trains with seed ``<config seed> + s`` into ``save/<id>``.
    """
    ckpt = f"save/{run_id}/{run_id}-last.ckpt"
    where = ["--seed", str(TrainConfig().seed + seed), "--checkpoint_path", f"save/{run_id}"] if seed else []
    name = f"{label} (seed {seed})" if seed else label
    train = [PY, "tools/train_pl.py", "--cfg", cfg, "--id", run_id, *where] + (SMOKE_TRAIN if smoke else [])
    if init_from:
        train += ["--init_from", init_from] + (["--limit_train_batches", "2", "--val_check_interval", "0"] if smoke else [])
    return [
        Stage(f"train {name}", train, [ckpt], scratch=(f"save/{run_id}",), group=f"seed{seed}"),
        Stage(f"test {name}", [PY, "tools/train_pl.py", "--cfg", cfg, "--id", run_id, *where, "--evaluate",
                               *(["--batch_size", "10"] if smoke else [])],
              [f"eval_results/{run_id}_test.json"], group=f"seed{seed}"),
        Stage(f"retrieval {name}", [PY, "tools/eval_clip_retrieval.py", "--gen_caption_path",
                                     f"eval_results/{run_id}_test.json", "--clip_model", CLIP,
                                     "--image_features", "data/fineshapes_clipscore_vis.npy"],
              [f"eval_results/{run_id}_test_retrieval.json"], group=f"seed{seed}"),
        Stage(f"FineShapesEval {name}", [PY, "tools/finecapeval_inference.py", "--cfg", cfg, "--ckpt", ckpt,
                                          "--id", run_id, "--input_json", "data/FineShapesEval.json",
                                          "--input_att_dir", "data/FineShapesEval_clip_tinyRN_att.npy"],
              [f"FineCapEval_results/{run_id}.json"], group=f"seed{seed}"),
        Stage(f"FineShapesEval score {name}", [PY, "tools/eval_finecapeval.py", "--finecapeval_path",
                                                "data/FineShapesEval.csv", "--generated_id2caption",
                                                f"FineCapEval_results/{run_id}.json", "--scenes",
                                                "data/fineshapes_scenes.json", "--no_caption_metrics"],
              [f"FineCapEval_results/{run_id}_finecapeval.json"], group=f"seed{seed}"),
    ]


def stages(retrain_clip: bool, smoke: bool = False, seeds: int = 1) -> list[Stage]:
    """Every stage in order; ``seeds`` > 1 repeats the training stages (and a report) per seed index."""
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
    for seed in range(seeds):
        runs = seed_runs(seed)
        mle_ckpt = f"save/{runs[0][1]}/{runs[0][1]}-last.ckpt"
        for k, (label, run_id, cfg) in enumerate(runs):
            out += model_stages(label, run_id, cfg, smoke, seed, init_from=mle_ckpt if k else None)
    for seed in range(1, seeds):
        out.append(report_stage(seed))
    out.append(report_stage(0, seeds))
    return out


def report_stage(seed: int, seeds: int = 1) -> Stage:
    """The report of seed index ``seed``; seed 0's, with ``seeds`` > 1, adds the spread over all seeds."""
    runs = seed_runs(seed)
    command = [PY, "tools/make_report.py", "--runs", ",".join(run_id for _, run_id, _ in runs),
               "--labels", ",".join(label for label, _, _ in runs), "--out_dir", seed_report_dir(seed)]
    if seed:
        return Stage(f"report (seed {seed})", [*command, "--timings", "none", "--title",
                                               f"FineShapes reproduction, seed {seed}"],
                     [f"{seed_report_dir(seed)}/report.json"], group=f"seed{seed}")
    command += ["--timings", "demo/timings.json"]
    if seeds > 1:
        command += ["--seed_reports", ",".join(f"{s}:{seed_report_dir(s)}/report.json" for s in range(1, seeds))]
    return Stage("report", command, ["demo/report.md", "demo/report.json"], current=lambda: _spread_of(seeds))


def _spread_of(seeds: int) -> bool:
    """Whether ``demo/report.json`` holds the spread over ``seeds`` seeds (none for one seed)."""
    try:
        spread = json.loads(Path("demo/report.json").read_text()).get("over_seeds")
    except (OSError, ValueError):
        return False
    return (spread or {}).get("n_seeds", 1) == seeds


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--force", action="store_true", help="re-run stages whose outputs exist")
    parser.add_argument("--retrain_clip", action="store_true", help="train the tiny CLIP from scratch")
    parser.add_argument("--smoke", action="store_true", help="a tiny world and a few steps per stage (a quick check)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train MLE and the four SCST runs with this many seeds on the same world (seed 0: "
                             "the single-seed demo; seed s: run ids <id>_s<s>, report in demo/seed<s>); "
                             "the report adds mean ± sd per cell and per claim the seeds it held in")
    args = parser.parse_args(argv)
    at_least(1, "--seeds", args.seeds)
    timings_path = Path("demo/timings.json")
    timings: dict[str, float] = {}
    stamps: dict[str, str] = {}
    if not args.force:
        if timings_path.is_file():
            timings = json.loads(timings_path.read_text()).get("stages_s", {})
        if STAMPS.is_file():
            stamps = json.loads(STAMPS.read_text())
    ran: set[str | None] = set()  # groups of the stages run so far (None: a shared stage)
    start = time.time()
    for stage in stages(args.retrain_clip, args.smoke, args.seeds):
        inputs_changed = None in ran or (stage.group in ran if stage.group else bool(ran))
        if not (args.force or inputs_changed):
            if stage.done(stamps):
                print(f"[demo] {stage.name}: outputs exist, skipped (FORCE=1 re-runs)", flush=True)
                continue
            if stage.outputs_exist():
                print(f"[demo] {stage.name}: outputs exist but were made by another command or config; "
                      "making them again", flush=True)
        print(f"[demo] {stage.name}: {' '.join('python' if c == PY else c for c in stage.command)}", flush=True)
        stage.clear()
        t0 = time.time()
        result = subprocess.run(stage.command)
        if result.returncode != 0:
            print(f"[demo] stage {stage.name!r} failed with exit status {result.returncode}; "
                  "earlier stages are kept, fix the error and run `make demo` again", file=sys.stderr)
            return result.returncode
        timings[stage.name] = round(time.time() - t0, 2)
        stamps[stage.name] = stage.signature()
        ran.add(stage.group)
        _write_timings(timings_path, timings)
        write_json(STAMPS, stamps, indent=2)
    print(f"[demo] done in {time.time() - start:.1f}s; total of recorded stage times "
          f"{sum(timings.values()):.1f}s; report: demo/report.md")
    return 0


def _write_timings(path: Path, timings: dict[str, float]) -> None:
    write_json(path, {"stages_s": timings, "total_s": round(sum(timings.values()), 2)}, indent=2)


if __name__ == "__main__":
    sys.exit(main())
